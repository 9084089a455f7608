import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * A child process of the test cluster: optionally inside a network namespace,
 * stdout+stderr appended to a log file (so a crash leaves its reason on disk), and stopped
 * by its own PID only; a parent-death signal kills it if this process dies.
 */
export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  /** Resolves with the exit code (128+signal when killed) once the process is gone. */
  readonly exited: Promise<number>;
  exitCode: number | undefined;

  constructor(
    name: string,
    argv: string[],
    opts: ProcessPlace & { env?: Record<string, string>; logFile: string; cwd?: string },
  ) {
    this.name = name;
    this.logFile = opts.logFile;
    const fd = openSync(opts.logFile, 'a');
    const full = placedArgv(argv, opts);
    try {
      this.child = spawn(full[0] as string, full.slice(1), {
        stdio: ['ignore', fd, fd],
        env: opts.env ?? process.env,
        cwd: opts.cwd,
      });
    } finally {
      closeSync(fd);
    }
    this.exited = new Promise((resolve) => {
      this.child.once('error', () => {
        this.exitCode = 127;
        resolve(127);
      });
      this.child.once('exit', (code, signal) => {
        this.exitCode = code ?? 128 + signalNumber(signal);
        resolve(this.exitCode);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
  async stop(graceMs = 5_000): Promise<void> {
    if (!this.running || !this.pid) return;
    signal(this.pid, 'SIGTERM');
    const timer = setTimeout(() => this.pid && signal(this.pid, 'SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

export interface ProcessPlace {
  netns?: string;
  /**
   * Enter `netns` with `nsenter --net` and keep the root mount namespace (`ip netns exec`
   * makes a private one): what a kubelet and containerd need, whose mounts runc must see.
   */
  shareMounts?: boolean;
}

/**
 * The argv that runs `argv` in a namespace, dying with its parent. `ip netns exec`,
 * `nsenter` and `setpriv` all exec the next step, so the PID is the program's own.
 */
export function placedArgv(argv: string[], place: ProcessPlace): string[] {
  return [
    ...(place.netns
      ? place.shareMounts
        ? ['nsenter', `--net=/run/netns/${place.netns}`, '--']
        : ['ip', 'netns', 'exec', place.netns]
      : []),
    // Dies with its parent even when that is killed outright: no orphaned API servers.
    'setpriv',
    '--pdeathsig=SIGKILL',
    '--',
    ...argv,
  ];
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function signalNumber(signal: NodeJS.Signals | null): number {
  return signal ? constants.signals[signal] : 0;
}

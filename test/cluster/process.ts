import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { constants } from 'node:os';

/**
 * A child process of the test cluster: optionally inside a network namespace and as another
 * uid/gid, stdout+stderr appended to a log file (so a crash leaves its reason on disk), and
 * stopped by its own PID only. `ip netns exec` and `setpriv` both exec their command, so
 * the PID we hold is the program's own; a parent-death signal kills it if this process dies.
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
    opts: {
      netns?: string;
      uid?: number;
      gid?: number;
      env?: Record<string, string>;
      logFile: string;
      cwd?: string;
    },
  ) {
    this.name = name;
    this.logFile = opts.logFile;
    const fd = openSync(opts.logFile, 'a');
    const full = [
      ...(opts.netns ? ['ip', 'netns', 'exec', opts.netns] : []),
      // Dies with this process even when it is killed outright: no orphaned API servers.
      'setpriv',
      '--pdeathsig=SIGKILL',
      ...(opts.uid !== undefined
        ? [`--reuid=${opts.uid}`, `--regid=${opts.gid ?? opts.uid}`, '--clear-groups']
        : []),
      '--',
      ...argv,
    ];
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

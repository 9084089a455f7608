import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

/**
 * Everything the applier does to the machine goes through these two methods, so the whole
 * install/cleanup logic runs unchanged against a RecordingHost in unit tests and against
 * the real network namespace in `edgemesh init`.
 */
export interface Host {
  /**
   * Runs a binary (looked up in PATH) with optional stdin. Never rejects for a non-zero
   * exit; a binary that cannot be found resolves with code 127 and notFound set.
   */
  run(command: string, args: readonly string[], stdin?: string): Promise<RunResult>;
  /**
   * Reads a sysctl under /proc/sys (key like "net/ipv4/ip_local_reserved_ports"), or writes
   * it when `value` is given. Rejects with the errno error (EACCES, EROFS, ENOENT).
   */
  sysctl(key: string, value?: string): Promise<string>;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  notFound?: boolean;
}

/** Bounds one iptables call: a stuck xtables lock must not hang the pod's start forever. */
const RUN_TIMEOUT_MS = 30_000;

export const realHost: Host = {
  run(command, args, stdin) {
    return new Promise((resolve) => {
      const child = spawn(command, [...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      // Our own timer, cleared on every outcome: spawn's `timeout` option keeps the event
      // loop alive for its full length when the binary does not exist.
      const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      child.stdin.on('error', () => undefined); // the binary may exit before reading stdin
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve({ code: 127, stdout: '', stderr: e.message, notFound: e.code === 'ENOENT' });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({
          code: code ?? 128,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8') + (signal ? `killed by ${signal}` : ''),
        });
      });
      child.stdin.end(stdin ?? '');
    });
  },
  async sysctl(key, value) {
    const path = `/proc/sys/${key}`;
    if (value === undefined) return (await readFile(path, 'utf8')).trim();
    await writeFile(path, `${value}\n`);
    return value;
  },
};

/** One call a RecordingHost saw, in a form that reads well in test failures. */
export interface RecordedCall {
  command: string;
  args: readonly string[];
  stdin?: string;
}

/**
 * A Host for tests: records every call and answers from a script. `respond` returns the
 * result for a command (undefined → the binary is "not installed"); sysctls live in a map.
 */
export class RecordingHost implements Host {
  readonly calls: RecordedCall[] = [];
  readonly sysctls: Map<string, string>;
  readonly #respond: (command: string, args: readonly string[], stdin?: string) => RunResult | undefined;
  readonly #sysctlError?: NodeJS.ErrnoException;

  constructor(opts: {
    respond: (command: string, args: readonly string[], stdin?: string) => RunResult | undefined;
    sysctls?: Record<string, string>;
    /** Makes every sysctl write fail with this errno code (e.g. 'EROFS'). */
    sysctlWriteError?: string;
  }) {
    this.#respond = opts.respond;
    this.sysctls = new Map(Object.entries(opts.sysctls ?? {}));
    if (opts.sysctlWriteError) {
      this.#sysctlError = Object.assign(new Error(`${opts.sysctlWriteError}: write failed`), {
        code: opts.sysctlWriteError,
      });
    }
  }

  async run(command: string, args: readonly string[], stdin?: string): Promise<RunResult> {
    this.calls.push({ command, args: [...args], ...(stdin !== undefined ? { stdin } : {}) });
    return (
      this.#respond(command, args, stdin) ?? {
        code: 127,
        stdout: '',
        stderr: `spawn ${command} ENOENT`,
        notFound: true,
      }
    );
  }

  async sysctl(key: string, value?: string): Promise<string> {
    if (value === undefined) {
      const v = this.sysctls.get(key);
      if (v === undefined) throw Object.assign(new Error(`ENOENT: ${key}`), { code: 'ENOENT' });
      return v;
    }
    this.calls.push({ command: 'sysctl', args: [key, value] });
    if (this.#sysctlError) throw this.#sysctlError;
    this.sysctls.set(key, value);
    return value;
  }
}

const DEFAULT_XTABLES_LOCK = '/run/xtables.lock';
const FALLBACK_XTABLES_LOCKS = ['/dev/shm/xtables.lock', '/tmp/xtables.lock'];

/**
 * iptables-legacy takes a lock file (/run/xtables.lock) and exits 4 when it cannot open it,
 * which is the case in an init container with readOnlyRootFilesystem. The lock only
 * serialises iptables callers sharing that file system, i.e. inside this container, so any
 * writable path will do: point XTABLES_LOCKFILE (inherited by the iptables children) at the
 * first one that opens. Returns the path chosen when it had to move, else undefined.
 */
export function ensureXtablesLock(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.XTABLES_LOCKFILE) return undefined;
  const canOpen = (path: string) => {
    try {
      closeSync(openSync(path, 'a'));
      return true;
    } catch {
      return false;
    }
  };
  if (canOpen(DEFAULT_XTABLES_LOCK)) return undefined;
  const fallback = FALLBACK_XTABLES_LOCKS.find(canOpen);
  if (fallback) env.XTABLES_LOCKFILE = fallback;
  return fallback;
}

import { type ChildProcess, execFile, type SpawnOptions, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * Network namespaces for tests. Every namespace and process a lab creates is recorded and
 * removed by `cleanup()`, which tests call from afterAll/finally so nothing is left behind
 * even when a test fails. Namespaces are never attached to the root namespace and get no
 * default route out: only the addresses the test wires up exist.
 *
 * Names carry a per-lab random tag so parallel labs (and leftover ones) never collide.
 */
export class NetnsLab {
  /** Labs of this process that own something: what cleanUpOnInterrupt removes. */
  static readonly #live = new Set<NetnsLab>();
  static #interruptHandled = false;

  /**
   * For scripts run by hand (benchmarks): on SIGINT/SIGTERM, or stdout closing under them,
   * clean up every lab of this process before exiting, as the `finally` of an uninterrupted
   * run would. Tests do not need it: vitest runs their afterAll hooks.
   */
  static cleanUpOnInterrupt(): void {
    if (NetnsLab.#interruptHandled) return;
    NetnsLab.#interruptHandled = true;
    let aborting = false;
    const abort = () => {
      if (aborting) return;
      aborting = true;
      Promise.allSettled([...NetnsLab.#live].map((lab) => lab.cleanup())).finally(() => process.exit(130));
    };
    process.on('SIGINT', abort);
    process.on('SIGTERM', abort);
    process.stdout.on('error', abort);
  }

  readonly tag: string;
  readonly #namespaces: string[] = [];
  readonly #processes: ChildProcess[] = [];

  constructor(prefix: string) {
    // Linux interface names are at most 15 chars; keep the tag short.
    this.tag = `${prefix}${randomBytes(2).toString('hex')}`;
  }

  /** Creates namespace `<tag>-<name>` with loopback up; returns its full name. */
  async add(name: string): Promise<string> {
    const ns = `${this.tag}-${name}`;
    NetnsLab.#live.add(this);
    await sh('ip', ['netns', 'add', ns]);
    this.#namespaces.push(ns);
    await this.exec(ns, ['ip', 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /**
   * A veth pair between two namespaces of this lab, with addresses (CIDR notation, IPv4 or
   * IPv6; arrays allowed) on each end, both ends up. Interface names must be ≤ 15 chars.
   */
  async link(
    a: { ns: string; ifname: string; addr?: string | string[] },
    b: { ns: string; ifname: string; addr?: string | string[] },
  ): Promise<void> {
    const tmpA = `v${randomBytes(4).toString('hex')}`;
    const tmpB = `v${randomBytes(4).toString('hex')}`;
    await sh('ip', ['link', 'add', tmpA, 'netns', a.ns, 'type', 'veth', 'peer', 'name', tmpB, 'netns', b.ns]);
    for (const [end, tmp] of [
      [a, tmpA],
      [b, tmpB],
    ] as const) {
      await this.exec(end.ns, ['ip', 'link', 'set', tmp, 'name', end.ifname]);
      for (const addr of [end.addr ?? []].flat()) {
        await this.exec(end.ns, [
          'ip',
          'addr',
          'add',
          addr,
          'dev',
          end.ifname,
          ...(addr.includes(':') ? ['nodad'] : []),
        ]);
      }
      await this.exec(end.ns, ['ip', 'link', 'set', end.ifname, 'up']);
    }
  }

  /** Runs a command inside a namespace and returns its output; throws with stderr on failure. */
  async exec(
    ns: string,
    argv: string[],
    opts: { uid?: number; gid?: number; timeoutMs?: number; input?: string } = {},
  ): Promise<{ stdout: string; stderr: string }> {
    return sh('ip', ['netns', 'exec', ns, ...asUser(argv, opts)], opts.timeoutMs ?? 30_000, opts.input);
  }

  /** Like exec but never throws: returns the exit code too. */
  async run(
    ns: string,
    argv: string[],
    opts: { uid?: number; gid?: number; timeoutMs?: number } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return exitResult(this.exec(ns, argv, opts));
  }

  /** Starts a long-running process in a namespace; it is killed (by PID) in cleanup(). */
  spawn(ns: string, argv: string[], opts: SpawnOptions & { uid?: number; gid?: number } = {}): ChildProcess {
    const { uid, gid, ...spawnOpts } = opts;
    const child = spawn('ip', ['netns', 'exec', ns, ...asUser(argv, { uid, gid })], {
      stdio: 'pipe',
      ...spawnOpts,
    });
    this.#processes.push(child);
    return child;
  }

  /** Kills every process this lab started and deletes its namespaces. Safe to call twice. */
  async cleanup(): Promise<void> {
    for (const child of this.#processes.splice(0)) {
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
    for (const ns of this.#namespaces.splice(0).reverse()) {
      // Processes we did not start directly (daemons forked by a test) die with the namespace's PIDs.
      const pids = await sh('ip', ['netns', 'pids', ns]).then(
        (r) => r.stdout.split(/\s+/).filter(Boolean),
        () => [],
      );
      for (const pid of pids) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await sh('ip', ['netns', 'del', ns]).catch(() => undefined);
    }
    NetnsLab.#live.delete(this);
  }
}

/** Settles a command's promise to its exit code and output instead of throwing on failure. */
export async function exitResult(
  run: Promise<{ stdout: string; stderr: string }>,
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run;
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return {
      code: typeof e.code === 'number' ? e.code : 1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? String(err),
    };
  }
}

function asUser(argv: string[], opts: { uid?: number; gid?: number }): string[] {
  if (opts.uid === undefined) return argv;
  return [
    'setpriv',
    `--reuid=${opts.uid}`,
    `--regid=${opts.gid ?? opts.uid}`,
    '--clear-groups',
    '--',
    ...argv,
  ];
}

async function sh(
  cmd: string,
  args: string[],
  timeoutMs = 30_000,
  input?: string,
): Promise<{ stdout: string; stderr: string }> {
  const p = execFileP(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' });
  if (input !== undefined) {
    p.child.stdin?.end(input);
  }
  return p;
}

/** Waits until `check` resolves truthy, polling every `intervalMs`, up to `timeoutMs`. */
export async function waitFor<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 10_000,
  intervalMs = 50,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await check();
      if (v) return v as T;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${String(lastErr)}` : ''}`,
  );
}

/** Absolute path of the project's CLI shim. */
export const EDGEMESH_BIN = new URL('../../bin/edgemesh', import.meta.url).pathname;

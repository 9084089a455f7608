// A throw-away containerd for image tests: own root, state and socket under one temporary
// directory, stopped by its PID, then every shim it started (by PID), every mount under the
// directory and the directory itself are gone. No CRI plugin: importing and `ctr run` need
// none, and without it nothing reads CNI configuration or touches the host network.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ManagedProcess } from '../process.ts';

const run = promisify(execFile);

export class ThrowawayContainerd {
  readonly dir: string;
  readonly socket: string;
  private readonly proc: ManagedProcess;

  private constructor(dir: string, proc: ManagedProcess) {
    this.dir = dir;
    this.socket = join(dir, 'containerd.sock');
    this.proc = proc;
  }

  static async start(): Promise<ThrowawayContainerd> {
    // Short path: a unix socket path must stay under 108 bytes.
    const dir = mkdtempSync('/tmp/emctd-');
    const config = join(dir, 'config.toml');
    writeFileSync(
      config,
      [
        'version = 2',
        `root = "${dir}/root"`,
        `state = "${dir}/state"`,
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
        '[grpc]',
        `  address = "${dir}/containerd.sock"`,
        '',
      ].join('\n'),
    );
    const proc = new ManagedProcess('containerd', ['containerd', '--config', config], {
      logFile: join(dir, 'containerd.log'),
    });
    const c = new ThrowawayContainerd(dir, proc);
    for (let i = 0; ; i++) {
      try {
        await c.ctr(['version']);
        return c;
      } catch (err) {
        if (!proc.running || i > 100) {
          await c.stop();
          throw new Error(
            `containerd did not start: ${err}\n${readFileSync(join(dir, 'containerd.log'), 'utf8')}`,
          );
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** `ctr -a SOCKET -n k8s.io ARGS...`; resolves with stdout + stderr. */
  async ctr(args: string[], timeoutMs = 60_000): Promise<string> {
    const r = await run('ctr', ['-a', this.socket, '-n', 'k8s.io', ...args], {
      timeout: timeoutMs,
      maxBuffer: 16 << 20,
    }).catch((err: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`ctr ${args.join(' ')}: ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    });
    return r.stdout + r.stderr;
  }

  /** Stops containerd, its shims, unmounts what it left mounted and removes the directory. */
  async stop(): Promise<void> {
    await this.proc.stop();
    // Shims outlive containerd on purpose (containers survive restarts): ours name our socket.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      let argv: string[];
      try {
        argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      if (argv[0]?.includes('containerd-shim') && argv.includes(this.socket)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // gone already
        }
      }
    }
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const m of mounts) await run('umount', ['-l', m]).catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }
}

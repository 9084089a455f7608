/**
 * A pod that captures UDP, for the UDP netns tests (sidecar/udp*.netns.test.ts) and
 * bench/udp.ts: the sidecar started as the webhook runs a UDP-capturing one (uid 0, gid 1337,
 * only `UDP_SIDECAR_CAPABILITIES` in its bounding set: a test with more capabilities would
 * hide a missing one), its /metrics read back, and a python app whose connected UDP sockets
 * are driven by JSON commands (a connected socket: the kernel drops a reply that does not
 * come from the address it sent to, as a real app's would).
 */
import type { ChildProcess } from 'node:child_process';
import { EDGEMESH_BIN, type NetnsLab, waitFor } from '../../test/harness/netns.ts';
import { UDP_SIDECAR_CAPABILITIES } from '../../webhook/inject.ts';

/** The system's python3: a user-local one (pyenv under /root) is not readable by the app uid. */
const PYTHON = '/usr/bin/python3';

/** `edgemesh sidecar ARGS` under setpriv with only the webhook's capabilities. */
export function udpSidecarArgv(args: readonly string[]): string[] {
  return [
    'setpriv',
    `--bounding-set=-all,${UDP_SIDECAR_CAPABILITIES.map((c) => `+${c.toLowerCase()}`).join(',')}`,
    '--inh-caps=-all',
    '--',
    EDGEMESH_BIN,
    'sidecar',
    ...args,
  ];
}

export interface UdpSidecar {
  child: ChildProcess;
  /** Its stdout and stderr as they came. */
  log: string[];
}

/** Starts the sidecar in `ns` and waits for its /ready (failing with its log if it exits first). */
export async function startUdpSidecar(
  lab: NetnsLab,
  ns: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<UdpSidecar> {
  const log: string[] = [];
  const child = lab.spawn(ns, udpSidecarArgv(args), { uid: 0, gid: 1337, env });
  child.stderr?.on('data', (d: Buffer) => log.push(String(d)));
  child.stdout?.on('data', (d: Buffer) => log.push(String(d)));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`sidecar exited ${child.exitCode}: ${log.join('')}`);
      const r = await lab.run(ns, ['curl', '-s', '-m', '1', 'http://127.0.0.1:15021/ready']);
      return r.stdout.startsWith('ready');
    },
    20_000,
    100,
    'sidecar /ready',
  );
  return { child, log };
}

/** A sample of the sidecar's /metrics: `name` with `label` (e.g. 'reason="no-endpoint"') among its labels; 0 if absent. */
export async function sidecarMetric(lab: NetnsLab, ns: string, name: string, label = ''): Promise<number> {
  const r = await lab.run(ns, ['curl', '-s', '-m', '2', 'http://127.0.0.1:15020/metrics']);
  const line = r.stdout.split('\n').find((x) => x.startsWith(`${name}{`) && x.includes(label));
  return line ? Number(line.split(' ').pop()) : 0;
}

/**
 * The app: reads JSON commands on stdin, keeps one connected socket per flow name (IPv6 when
 * the address has a colon), prints one JSON line per command:
 *   {flow, ip, port, data, tries?, wait?}  a datagram, resent up to `tries` times until a reply
 *                                         comes within `wait` s: {flow, data, from, port, local}
 *                                         or {flow, error}
 *   {flow, ip, port, burst: [sizes], prefix}  datagrams of those payload sizes back to back;
 *                                         counts the replies that came back whole (the echo
 *                                         answers "<prefix><payload>"): {flow, burst, local}
 */
const APP_PY = `
import json, select, socket, sys
socks = {}
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    name = cmd["flow"]
    if name not in socks:
        fam = socket.AF_INET6 if ":" in cmd["ip"] else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.connect((cmd["ip"], cmd["port"]))
        socks[name] = s
    s = socks[name]
    if "burst" in cmd:
        want = set()
        for i, n in enumerate(cmd["burst"]):
            d = (str(i) + ":").encode() + b"x" * n
            want.add(cmd["prefix"].encode() + d)
            s.send(d)
        got = set()
        while len(got) < len(want):
            r, _, _ = select.select([s], [], [], 3)
            if not r:
                break
            data = s.recv(65535)
            if data in want:
                got.add(data)
        print(json.dumps({"flow": name, "burst": len(got), "local": s.getsockname()[1]}), flush=True)
        continue
    out = {"flow": name, "error": "timeout"}
    for _ in range(cmd.get("tries", 5)):
        s.send(cmd["data"].encode())
        r, _, _ = select.select([s], [], [], cmd.get("wait", 0.5))
        if r:
            try:
                data, src = s.recvfrom(65535)
                out = {"flow": name, "data": data.decode(), "from": src[0], "port": src[1], "local": s.getsockname()[1]}
            except OSError as e:
                out = {"flow": name, "error": str(e)}
            break
    print(json.dumps(out), flush=True)
`;

export interface AppReply {
  flow: string;
  data?: string;
  from?: string;
  port?: number;
  local?: number;
  error?: string;
  burst?: number;
}

export interface AppCommand {
  flow: string;
  ip: string;
  port: number;
  data?: string;
  tries?: number;
  wait?: number;
  burst?: number[];
  prefix?: string;
}

/** The python app in `ns` as `user`; `send` writes one command and waits for its line. */
export class UdpApp {
  readonly child: ChildProcess;
  readonly replies: AppReply[] = [];
  #err = '';

  constructor(lab: NetnsLab, ns: string, user: { uid: number; gid: number }) {
    this.child = lab.spawn(ns, [PYTHON, '-u', '-c', APP_PY], user);
    this.child.stderr?.on('data', (d: Buffer) => {
      this.#err += d;
    });
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = JSON.parse(buf.slice(0, nl));
        if (!line.ready) this.replies.push(line);
        buf = buf.slice(nl + 1);
      }
    });
  }

  async send(cmd: AppCommand, timeoutMs = 20_000): Promise<AppReply> {
    const before = this.replies.length;
    this.child.stdin?.write(`${JSON.stringify(cmd)}\n`);
    await waitFor(
      () => {
        if (this.child.exitCode !== null) throw new Error(`app exited ${this.child.exitCode}: ${this.#err}`);
        return this.replies.length > before;
      },
      timeoutMs,
      10,
      `app reply for ${cmd.flow} (${this.#err})`,
    );
    return this.replies[before] as AppReply;
  }
}

/**
 * UdpEngine's half of the fd-reuse fix (udp.c "Generations"): a flow closed while a batch is
 * handled has its later reports in that batch struck out, so a flow opened next on the same
 * fd number (the kernel reuses the lowest free one, as the stand-in addon below does) is not
 * ended by its predecessor's error. The addon's half (reports stale on arrival dropped in
 * C) is checked against the real addon in fd-reuse.netns.test.ts.
 */
import { describe, expect, it } from 'vitest';
import {
  dropReportsOf,
  type OnBatch,
  REC_ACTIVE,
  REC_CLOSED,
  REC_DATAGRAM,
  REC_DROPPED,
  REC_ERROR,
  type UdpAddon,
  UdpEngine,
} from './native-udp.ts';

type Records = (number | string | undefined)[];

/** A stand-in addon whose upstream() takes the lowest free fd number, like socket(2). */
function reusingAddon() {
  const open = new Set<number>([3]); // 3: the listener
  let deliver: OnBatch = () => {};
  const lowestFree = () => {
    let fd = 3;
    while (open.has(fd)) fd++;
    return fd;
  };
  const addon: UdpAddon = {
    create(cb) {
      deliver = cb;
      return {};
    },
    listen: () => 3,
    replySocket: () => 99,
    upstream: () => {
      const fd = lowestFree();
      open.add(fd);
      return fd;
    },
    retarget: () => {},
    send: () => 0,
    sendTo: () => 0,
    close: (_e, fd) => {
      open.delete(fd);
    },
    stats: () => [0, 0, 0],
    stop: () => {},
  };
  return { addon, deliver: (recs: Records) => deliver(Buffer.alloc(0), recs) };
}

describe('dropReportsOf', () => {
  it.each([
    { name: 'activity', kind: REC_ACTIVE, dropped: true },
    { name: 'an error', kind: REC_ERROR, dropped: true },
    { name: 'a closed gateway connection', kind: REC_CLOSED, dropped: true },
    { name: "a new flow's datagram (the listener's fd)", kind: REC_DATAGRAM, dropped: false },
  ])('$name about the fd: struck out $dropped', ({ kind, dropped }) => {
    const recs: Records = [kind, 7, 0, 1, undefined, undefined, REC_ERROR, 8, 111, 2, undefined, undefined];
    dropReportsOf(recs, 7);
    expect(recs[0]).toBe(dropped ? REC_DROPPED : kind);
    expect(recs[6]).toBe(REC_ERROR); // another fd's report is kept
  });
});

describe('UdpEngine handling a batch', () => {
  /**
   * The proxy's rules in miniature: an error ends the flow (its fd closed), a datagram of a
   * new flow opens one (upstream). Returns what the handler saw and the flows it holds.
   */
  function run() {
    const fake = reusingAddon();
    const flows = new Map<number, string>();
    const seen: string[] = [];
    const engine = new UdpEngine((_data, batch) => {
      for (let i = 0; i < batch.length; i += 6) {
        const [kind, fd] = [batch[i], batch[i + 1] as number];
        if (kind === REC_DATAGRAM) {
          const up = engine.upstream('10.0.0.1:53', 99, batch[i + 4] as string, batch[i + 5] as string);
          flows.set(up, batch[i + 4] as string);
          seen.push(`open ${up} for ${batch[i + 4]}`);
        } else if (kind === REC_ERROR && flows.has(fd)) {
          seen.push(`error ${fd}: end ${flows.get(fd)}`);
          flows.delete(fd);
          engine.close(fd);
        } else if (kind !== REC_DROPPED) seen.push(`kind ${kind} ${fd}`);
      }
    }, fake.addon);
    return { engine, fake, flows, seen };
  }

  it("does not end a flow opened on a closed flow's fd number by that flow's later error", () => {
    const { engine, fake, flows, seen } = run();
    const first = engine.upstream('10.0.0.1:53', 99, '192.168.1.2:4000', '10.96.0.10:53');
    flows.set(first, '192.168.1.2:4000');
    // One batch: the first flow's error, a new flow's datagram, then more of the first flow's
    // reports (its generation 1: made before JS closed it).
    // biome-ignore format: one record (6 slots) per line
    fake.deliver([
      REC_ERROR, first, 111, 1, undefined, undefined,
      REC_DATAGRAM, 3, 0, 0, '192.168.1.3:5000', '10.96.0.10:53',
      REC_ERROR, first, 111, 1, undefined, undefined,
      REC_ACTIVE, first, 0, 1, undefined, undefined,
    ]);
    expect(seen).toEqual([
      `error ${first}: end 192.168.1.2:4000`,
      `open ${first} for 192.168.1.3:5000`, // the same fd number, a new flow
    ]);
    expect([...flows]).toEqual([[first, '192.168.1.3:5000']]);
  });

  it('hands over reports of flows still open, and strikes out nothing after the batch', () => {
    const { engine, fake, flows, seen } = run();
    const a = engine.upstream('10.0.0.1:53', 99, '192.168.1.2:4000', '10.96.0.10:53');
    flows.set(a, '192.168.1.2:4000');
    fake.deliver([REC_ACTIVE, a, 0, 1, undefined, undefined]);
    engine.close(a); // between batches: nothing being handled
    flows.delete(a);
    expect(seen).toEqual([`kind ${REC_ACTIVE} ${a}`]);
  });
});

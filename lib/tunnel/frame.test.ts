import { describe, expect, it } from 'vitest';
import {
  DatagramDecoder,
  decodeFrame,
  encodeDatagram,
  encodeDatagrams,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_DATA,
  MAX_DATAGRAM,
} from './frame.ts';

// Wire bytes pinned by hand: a change to the format must change this table (and the
// protocol version), never slip through.
const table: { name: string; frame: Frame; hex: string }[] = [
  {
    name: 'OPEN v4',
    frame: { type: FrameType.OPEN, stream: 1, target: { ip: '10.1.1.2', port: 8080 } },
    hex: '01 01 0000 00000001 00000007 04 1f90 0a010102',
  },
  {
    name: 'OPEN v6',
    frame: { type: FrameType.OPEN, stream: 2, target: { ip: 'fd00::1', port: 443 } },
    hex: '01 01 0000 00000002 00000013 06 01bb fd000000000000000000000000000001',
  },
  {
    name: 'OPEN_DATAGRAM v4',
    frame: {
      type: FrameType.OPEN_DATAGRAM,
      stream: 3,
      target: { ip: '10.1.1.2', port: 5353, transport: 'udp' },
    },
    hex: '01 0b 0000 00000003 00000007 04 14e9 0a010102',
  },
  {
    name: 'OPEN_DATAGRAM v6',
    frame: {
      type: FrameType.OPEN_DATAGRAM,
      stream: 4,
      target: { ip: 'fd00::1', port: 53, transport: 'udp' },
    },
    hex: '01 0b 0000 00000004 00000013 06 0035 fd000000000000000000000000000001',
  },
  { name: 'ACCEPT', frame: { type: FrameType.ACCEPT, stream: 3 }, hex: '01 02 0000 00000003 00000000' },
  {
    name: 'DATA',
    frame: { type: FrameType.DATA, stream: 5, data: Buffer.from('hi') },
    hex: '01 03 0000 00000005 00000002 6869',
  },
  {
    name: 'WINDOW',
    frame: { type: FrameType.WINDOW, stream: 5, increment: 65536 },
    hex: '01 04 0000 00000005 00000004 00010000',
  },
  { name: 'FIN', frame: { type: FrameType.FIN, stream: 7 }, hex: '01 05 0000 00000007 00000000' },
  {
    name: 'RESET',
    frame: { type: FrameType.RESET, stream: 9, code: 1, reason: 'no' },
    hex: '01 06 0000 00000009 00000003 01 6e6f',
  },
  {
    name: 'PING',
    frame: { type: FrameType.PING, stream: 0, opaque: Buffer.from('0102030405060708', 'hex') },
    hex: '01 07 0000 00000000 00000008 0102030405060708',
  },
  {
    name: 'GOAWAY',
    frame: { type: FrameType.GOAWAY, stream: 0, reason: 'bye' },
    hex: '01 09 0000 00000000 00000003 627965',
  },
  {
    name: 'CONTROL',
    frame: { type: FrameType.CONTROL, stream: 0, message: { t: 'x' } },
    hex: '01 0a 0000 00000000 00000009 7b2274223a2278227d',
  },
  {
    name: 'RESUMABLE',
    frame: {
      type: FrameType.RESUMABLE,
      stream: 3,
      token: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
    },
    hex: '01 0c 0000 00000003 00000010 00112233445566778899aabbccddeeff',
  },
  {
    name: 'RESUME',
    frame: {
      type: FrameType.RESUME,
      stream: 5,
      token: Buffer.from('00112233445566778899aabbccddeeff', 'hex'),
      position: { received: 2 ** 32 + 5, credited: 7, finReceived: true },
    },
    hex: '01 0d 0000 00000005 00000021 00112233445566778899aabbccddeeff 0000000100000005 0000000000000007 01',
  },
  {
    name: 'RESUMED',
    frame: { type: FrameType.RESUMED, stream: 6, position: { received: 9, credited: 9, finReceived: false } },
    hex: '01 0e 0000 00000006 00000011 0000000000000009 0000000000000009 00',
  },
];

const bytes = (hex: string) => Buffer.from(hex.replace(/ /g, ''), 'hex');

/** Consecutive DATA pieces of one stream joined back into one frame, for comparing. */
function joinData(frames: Frame[]): Frame[] {
  const out: Frame[] = [];
  for (const f of frames) {
    const last = out.at(-1);
    if (f.type === FrameType.DATA && last?.type === FrameType.DATA && last.stream === f.stream)
      out[out.length - 1] = { ...last, data: Buffer.concat([last.data, f.data]) };
    else out.push(f);
  }
  return out;
}

describe('frame codec', () => {
  for (const { name, frame, hex } of table) {
    it(`${name}: encodes to the pinned bytes and decodes back`, () => {
      expect(encodeFrame(frame).toString('hex')).toBe(hex.replace(/ /g, ''));
      const decoded = new FrameDecoder().push(bytes(hex));
      expect(decoded).toEqual([frame]);
    });
  }

  it('reassembles frames split at every byte boundary and batched together', () => {
    const all = Buffer.concat(table.map((t) => bytes(t.hex)));
    for (let cut = 1; cut < all.length; cut++) {
      const d = new FrameDecoder();
      const frames = joinData([...d.push(all.subarray(0, cut)), ...d.push(all.subarray(cut))]);
      expect(frames).toEqual(table.map((t) => t.frame));
      expect(d.buffered).toBe(0);
    }
  });

  it('passes a DATA payload on in pieces as it arrives, as views of the input (no copy)', () => {
    const payload = Buffer.from(Array.from({ length: MAX_DATA }, (_, i) => i % 251));
    const wire = Buffer.concat([
      encodeFrame({ type: FrameType.DATA, stream: 3, data: payload }),
      encodeFrame({ type: FrameType.FIN, stream: 3 }),
    ]);
    const d = new FrameDecoder();
    const frames: Frame[] = [];
    // 16 KiB pieces, as TLS records arrive; the first also carries the header.
    for (let at = 0; at < wire.length; at += 16 * 1024)
      frames.push(...d.push(wire.subarray(at, at + 16 * 1024)));
    const data = frames.filter((f): f is Extract<Frame, { data: Buffer }> => f.type === FrameType.DATA);
    expect(data.length).toBe(5);
    for (const f of data) {
      expect(f.stream).toBe(3);
      expect(f.data.buffer).toBe(wire.buffer);
    }
    expect(Buffer.concat(data.map((f) => f.data))).toEqual(payload);
    expect(frames.at(-1)).toEqual({ type: FrameType.FIN, stream: 3 });
    expect(d.buffered).toBe(0);
  });

  const bad: { name: string; hex: string; error: RegExp }[] = [
    { name: 'wrong version', hex: '02 03 0000 00000001 00000001 00', error: /version 2/ },
    { name: 'reserved bits', hex: '01 03 0001 00000001 00000001 00', error: /reserved/ },
    { name: 'unknown type', hex: '01 7f 0000 00000001 00000000', error: /unknown frame type 0x7f/ },
    {
      name: 'DATA too long',
      hex: `01 03 0000 00000001 ${(MAX_DATA + 1).toString(16).padStart(8, '0')}`,
      error: /too long/,
    },
    { name: 'DATA on stream 0', hex: '01 03 0000 00000000 00000001 00', error: /needs a stream id/ },
    { name: 'empty DATA', hex: '01 03 0000 00000001 00000000', error: /must not be empty/ },
    { name: 'PING on a stream', hex: '01 07 0000 00000001 00000008 0000000000000000', error: /stream 0/ },
    { name: 'short PING', hex: '01 07 0000 00000000 00000002 0000', error: /8 bytes/ },
    { name: 'OPEN bad family', hex: '01 01 0000 00000001 00000007 05 1f90 0a010102', error: /family/ },
    { name: 'OPEN port 0', hex: '01 01 0000 00000001 00000007 04 0000 0a010102', error: /port 0/ },
    { name: 'WINDOW zero', hex: '01 04 0000 00000001 00000004 00000000', error: /must not be 0/ },
    { name: 'FIN with payload', hex: '01 05 0000 00000001 00000001 00', error: /must be empty/ },
    { name: 'CONTROL not JSON', hex: '01 0a 0000 00000000 00000001 7b', error: /not JSON/ },
    { name: 'CONTROL array', hex: '01 0a 0000 00000000 00000002 5b5d', error: /JSON object/ },
    { name: 'short RESUMABLE token', hex: '01 0c 0000 00000001 00000002 0011', error: /16 bytes/ },
    {
      name: 'RESUMABLE on stream 0',
      hex: '01 0c 0000 00000000 00000010 00112233445566778899aabbccddeeff',
      error: /needs a stream id/,
    },
    {
      name: 'short RESUME',
      hex: '01 0d 0000 00000001 00000010 00112233445566778899aabbccddeeff',
      error: /33 bytes/,
    },
    {
      name: 'RESUMED credited past received',
      hex: '01 0e 0000 00000002 00000011 0000000000000001 0000000000000002 00',
      error: /credited <= received/,
    },
    {
      name: 'RESUMED past 2^53',
      hex: '01 0e 0000 00000002 00000011 0020000000000000 0000000000000000 00',
      error: /2\^53/,
    },
    {
      name: 'RESUMED odd flags',
      hex: '01 0e 0000 00000002 00000011 0000000000000001 0000000000000001 02',
      error: /flags 0 or 1/,
    },
  ];
  for (const { name, hex, error } of bad) {
    it(`rejects ${name} with a FrameError`, () => {
      expect(() => new FrameDecoder().push(bytes(hex))).toThrow(error);
      expect(() => new FrameDecoder().push(bytes(hex))).toThrow(FrameError);
    });
  }

  it('a huge length is refused from the header alone, before any payload is buffered', () => {
    expect(() => new FrameDecoder().push(bytes('01 03 0000 00000001 ffffffff'))).toThrow(/too long/);
  });

  it('refuses to encode invalid frames', () => {
    expect(() =>
      encodeFrame({ type: FrameType.OPEN, stream: 1, target: { ip: 'example.com', port: 80 } }),
    ).toThrow(/not an IP/);
    expect(() =>
      encodeFrame({ type: FrameType.OPEN, stream: 1, target: { ip: '10.0.0.1', port: 70000 } }),
    ).toThrow(/out of range/);
    expect(() => encodeFrame({ type: FrameType.WINDOW, stream: 1, increment: 0 })).toThrow(/increment/);
  });

  it('round-trips IPv6 forms to their canonical text', () => {
    for (const [ip, canonical] of [
      ['::1', '::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['::ffff:10.1.2.3', '::ffff:a01:203'],
      ['fe80:0:0:0:0:0:0:0', 'fe80::'],
    ]) {
      const f = encodeFrame({ type: FrameType.OPEN, stream: 1, target: { ip, port: 1 } });
      const d = decodeFrame(f[1], 1, f.subarray(12));
      expect(d).toEqual({ type: FrameType.OPEN, stream: 1, target: { ip: canonical, port: 1 } });
    }
  });
});

// Datagram framing inside a datagram stream's DATA, pinned like the frames.
const datagrams: { name: string; payload: string; hex: string }[] = [
  { name: 'empty datagram', payload: '', hex: '0000' },
  { name: 'one byte', payload: '41', hex: '0001 41' },
  { name: 'a DNS-sized query', payload: 'ab'.repeat(300), hex: `012c ${'ab'.repeat(300)}` },
];
const hex = (h: string) => Buffer.from(h.replace(/\s+/g, ''), 'hex');

describe('datagram framing (datagram streams)', () => {
  for (const d of datagrams) {
    it(`${d.name}: encodes to the pinned bytes and decodes back`, () => {
      const bytes = encodeDatagram(hex(d.payload));
      expect(bytes.toString('hex')).toBe(d.hex.replace(/\s+/g, ''));
      expect(new DatagramDecoder().push(bytes)).toEqual([hex(d.payload)]);
    });
  }

  it('decodes the same however the stream was cut (every split point, and one byte at a time)', () => {
    const all = Buffer.concat(datagrams.map((d) => hex(d.hex)));
    const want = datagrams.map((d) => hex(d.payload));
    for (let cut = 0; cut <= all.length; cut++) {
      const dec = new DatagramDecoder();
      expect([...dec.push(all.subarray(0, cut)), ...dec.push(all.subarray(cut))], `cut ${cut}`).toEqual(want);
      expect(dec.buffered).toBe(0);
    }
    const dec = new DatagramDecoder();
    const got = [...all].flatMap((b) => dec.push(Buffer.from([b])));
    expect(got).toEqual(want);
  });

  it('encodes a batch in one buffer: the pinned bytes of each, joined', () => {
    const all = encodeDatagrams(datagrams.map((d) => hex(d.payload)));
    expect(all.toString('hex')).toBe(datagrams.map((d) => d.hex.replace(/\s+/g, '')).join(''));
    expect(encodeDatagrams([]).length).toBe(0);
    expect(() => encodeDatagrams([Buffer.alloc(1), Buffer.alloc(MAX_DATAGRAM + 1)])).toThrow(FrameError);
  });

  it('each() hands over the same datagrams as push(), views of the chunk when whole in it', () => {
    const all = Buffer.concat(datagrams.map((d) => hex(d.hex)));
    const want = datagrams.map((d) => hex(d.payload));
    for (let cut = 0; cut <= all.length; cut++) {
      const dec = new DatagramDecoder();
      const got: Buffer[] = [];
      dec.each(all.subarray(0, cut), (d) => got.push(d));
      dec.each(all.subarray(cut), (d) => got.push(d));
      expect(got, `cut ${cut}`).toEqual(want);
      expect(dec.buffered).toBe(0);
    }
    const seen: Buffer[] = [];
    new DatagramDecoder().each(all, (d) => seen.push(d));
    // No copy: the DNS-sized payload is a view of the chunk it came in.
    expect(seen[2].buffer).toBe(all.buffer);
  });

  it('keeps a partial datagram until the rest arrives', () => {
    const dec = new DatagramDecoder();
    expect(dec.push(hex('0003 6162'))).toEqual([]);
    expect(dec.buffered).toBe(4);
    expect(dec.push(hex('63 00'))).toEqual([Buffer.from('abc')]);
    expect(dec.buffered).toBe(1);
  });

  it(`refuses a datagram over ${MAX_DATAGRAM} bytes both ways, from the prefix alone`, () => {
    expect(encodeDatagram(Buffer.alloc(MAX_DATAGRAM)).length).toBe(MAX_DATAGRAM + 2);
    expect(() => encodeDatagram(Buffer.alloc(MAX_DATAGRAM + 1))).toThrow(FrameError);
    expect(() => new DatagramDecoder().push(hex('ffe4'))).toThrow(/65508 is over the 65507-byte maximum/);
    // Split prefix: still refused before any payload.
    const dec = new DatagramDecoder();
    expect(dec.push(hex('ff'))).toEqual([]);
    expect(() => dec.push(hex('ff'))).toThrow(FrameError);
  });
});

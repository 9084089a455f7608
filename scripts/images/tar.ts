// A minimal, deterministic tar writer: POSIX ustar headers, with a pax extended header
// ('x') in front of any entry whose path or link target does not fit ustar's fields. Enough
// for image layers (regular files, directories, symlinks) and for the docker-archive around
// them; nothing else (no hard links, devices, sparse files, xattrs).
//
// Header layout (512 bytes, POSIX.1-1988 ustar; numbers are octal ASCII, NUL-terminated):
//
//   0 name[100]   100 mode[8]   108 uid[8]   116 gid[8]   124 size[12]   136 mtime[12]
//   148 chksum[8] 156 typeflag  157 linkname[100]         257 magic "ustar\0"  263 version "00"
//   265 uname[32] 297 gname[32] 329 devmajor[8]  337 devminor[8]  345 prefix[155]  500 pad
//
// The checksum is the byte sum of the header with the chksum field read as eight spaces.
// Data follows in 512-byte blocks, zero-padded; the archive ends with two zero blocks.

export const BLOCK = 512;

export type EntryType = 'file' | 'dir' | 'symlink';

export interface TarEntry {
  /** Relative path, '/'-separated, no leading '/' or './'; directories without a trailing '/'. */
  path: string;
  type: EntryType;
  /** Permission bits including setuid/setgid/sticky (e.g. 0o1777). */
  mode: number;
  uid?: number;
  gid?: number;
  /** Seconds since the epoch; 0 for reproducible layers. */
  mtime?: number;
  /** Data length for files; must equal the bytes later passed to `data`. */
  size?: number;
  linkname?: string;
}

const TYPEFLAG: Record<EntryType | 'pax', string> = { file: '0', dir: '5', symlink: '2', pax: 'x' };
const NAME_MAX = 100;

function octal(buf: Buffer, offset: number, width: number, value: number): void {
  const digits = value.toString(8);
  if (digits.length > width - 1) throw new Error(`tar: ${value} does not fit a ${width}-byte field`);
  buf.write(digits.padStart(width - 1, '0') + '\0', offset, width, 'ascii');
}

/** One ustar header block. Fields too long for ustar must already be in a pax header. */
export function header(e: TarEntry & { typeflag?: string }): Buffer {
  const h = Buffer.alloc(BLOCK);
  const name = e.type === 'dir' ? `${e.path}/` : e.path;
  h.write(name.slice(0, NAME_MAX), 0, NAME_MAX, 'utf8');
  octal(h, 100, 8, e.mode & 0o7777);
  octal(h, 108, 8, e.uid ?? 0);
  octal(h, 116, 8, e.gid ?? 0);
  octal(h, 124, 12, e.type === 'file' ? (e.size ?? 0) : 0);
  octal(h, 136, 12, e.mtime ?? 0);
  h.write(e.typeflag ?? TYPEFLAG[e.type], 156, 1, 'ascii');
  if (e.linkname) h.write(e.linkname.slice(0, NAME_MAX), 157, NAME_MAX, 'utf8');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  // uname/gname stay empty: readers then use the numeric ids, which is what images mean.
  octal(h, 329, 8, 0);
  octal(h, 337, 8, 0);
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/** A pax record: "<len> <key>=<value>\n", where <len> counts the whole record itself. */
export function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + 1;
  while (String(len).length + bodyLen !== len) len = String(len).length + bodyLen;
  return `${len}${body}`;
}

function needsPax(s: string | undefined): boolean {
  // Non-ASCII goes to pax too: ustar has no encoding, pax says UTF-8.
  return s !== undefined && (Buffer.byteLength(s) >= NAME_MAX || !/^[\x20-\x7e]*$/.test(s));
}

export function padding(size: number): Buffer {
  const rest = size % BLOCK;
  return Buffer.alloc(rest === 0 ? 0 : BLOCK - rest);
}

/** The header blocks for one entry: a pax header first when the names need it. */
export function entryHeaders(e: TarEntry): Buffer[] {
  const records: string[] = [];
  const path = e.type === 'dir' ? `${e.path}/` : e.path;
  if (needsPax(path)) records.push(paxRecord('path', path));
  if (needsPax(e.linkname)) records.push(paxRecord('linkpath', e.linkname!));
  if (records.length === 0) return [header(e)];
  const data = Buffer.from(records.join(''), 'utf8');
  const base = e.path.split('/').pop()!.slice(0, 80);
  const pax = header({
    path: `PaxHeaders/${base}`,
    type: 'file',
    mode: 0o644,
    size: data.length,
    typeflag: 'x',
  });
  return [pax, data, padding(data.length), header(e)];
}

/**
 * Streams a tar archive to `sink` (which may hash and write). Callers add entries in the
 * order they want them stored; for reproducible output that order must be deterministic.
 */
export class TarWriter {
  private readonly sink: (chunk: Buffer) => void;
  /** Data bytes the current file entry still expects, and its full size (for padding). */
  private pending = 0;
  private padTo = 0;
  bytes = 0;

  constructor(sink: (chunk: Buffer) => void) {
    this.sink = sink;
  }

  private emit(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.sink(chunk);
    this.bytes += chunk.length;
  }

  /** Writes the headers; for a file, follow with `data()` calls totalling `size` bytes, in order. */
  add(e: TarEntry): void {
    if (this.pending !== 0) throw new Error(`tar: ${this.pending} bytes missing before ${e.path}`);
    if (e.path === '' || e.path.startsWith('/') || e.path.endsWith('/'))
      throw new Error(`tar: bad path ${e.path}`);
    for (const b of entryHeaders(e)) this.emit(b);
    this.pending = e.type === 'file' ? (e.size ?? 0) : 0;
    this.padTo = this.pending;
  }

  data(chunk: Buffer): void {
    if (chunk.length > this.pending) throw new Error('tar: more data than the header announced');
    this.pending -= chunk.length;
    this.emit(chunk);
    if (this.pending === 0) this.emit(padding(this.padTo));
  }

  /** A file entry with its whole content in memory. */
  addFile(e: Omit<TarEntry, 'type' | 'size'>, content: Buffer): void {
    this.add({ ...e, type: 'file', size: content.length });
    if (content.length > 0) this.data(content);
  }

  finish(): void {
    if (this.pending !== 0) throw new Error(`tar: ${this.pending} bytes missing at the end`);
    this.emit(Buffer.alloc(2 * BLOCK));
  }
}

import type net from 'node:net';
import { parseRawLine, RAW_LINE_MAX } from '../lib/tunnel/control.ts';

/**
 * A raw (not TLS) connection's first line: "EMT1 RELAY <token>" or "EMT1 PROBE <token>"
 * (lib/tunnel/control.ts). Read here, then the socket goes, paused and with what followed
 * the line put back, to `onLine`; a bad or overlong line is refused (`onBad`) and the socket
 * destroyed.
 *
 * Timeout: RAW_LINE_TIMEOUT_MS for the whole line from when the sniffer handed the socket
 * over. A gateway writes it at once (≤ 64 bytes), so 5 s is generous, and a silent
 * connection holds a connection slot (admission.ts) for no longer.
 */
export const RAW_LINE_TIMEOUT_MS = 5_000;

export function readRawLine(
  socket: net.Socket,
  onLine: (kind: 'RELAY' | 'PROBE', token: string) => void,
  onBad: () => void,
): void {
  let buf = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), RAW_LINE_TIMEOUT_MS);
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0) {
      if (buf.length > RAW_LINE_MAX) {
        onBad();
        socket.destroy();
      }
      return;
    }
    socket.removeListener('data', onData);
    socket.pause();
    clearTimeout(timer);
    let line: ReturnType<typeof parseRawLine>;
    try {
      line = parseRawLine(buf.subarray(0, nl).toString('latin1'));
    } catch {
      onBad();
      socket.destroy();
      return;
    }
    const rest = buf.subarray(nl + 1);
    if (rest.length > 0) socket.unshift(rest);
    onLine(line.kind, line.token);
  };
  socket.on('data', onData);
  socket.resume(); // paused by the protocol sniffer
}

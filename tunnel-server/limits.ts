/**
 * The tunnel-server's configurable caps (flags in cli.ts, fixed for the process). Everything
 * here is reachable from the internet without a certificate, so every resource an
 * unauthenticated peer can hold is bounded: connections (total and per source IP, here), the
 * bytes queued towards each peer (control.ts, enrol-session.ts), the time before enrolling
 * (enrol-session.ts) and the requests a node may have pending (pending.ts).
 */
export interface RelayLimits {
  /** Concurrent relayed sessions per node; 0 = unlimited. */
  maxRelaysPerNode: number;
  /** Bytes per second relayed per node (sum over its relays); 0 = unlimited. */
  bytesPerSecondPerNode: number;
}

export interface ConnectionLimits {
  /** Open TCP connections in all (relay legs, control, enrolment, handshakes). */
  maxConnections: number;
  /** Open TCP connections from one source IP (a NAT in front of a site shares one). */
  maxConnectionsPerIp: number;
}

/**
 * What one certificate-less connection can pin is bounded (TLS buffers, a partial CONTROL
 * frame ≤ 64 KiB in the decoder, ≤ 32 KiB queued towards it), so the total cap is what keeps
 * the server inside its memory limit (512Mi): measured ~180 KB of RSS per such connection
 * (tunnel-server/hostile.e2e.test.ts), so 2048 of them took an idle server of ~170 MB past
 * 512Mi; 1024 leave room. 256 per IP leaves room for a site's gateways
 * behind one NAT (one control connection each per replica, plus relay legs and probes).
 */
export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = { maxConnections: 1024, maxConnectionsPerIp: 256 };

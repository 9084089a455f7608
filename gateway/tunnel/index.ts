// The gateway's tunnel to peer gateways: what the rest of the gateway uses.
export { type EnrolOptions, loadOrEnrol } from './enrol.ts';
export { createTunnelManager, type TunnelManager, type TunnelManagerOptions } from './manager.ts';
export type { ServerAddress } from './server-link.ts';
export { GatewayTunnel, type GatewayTunnelOptions, parseServers, startGatewayTunnel } from './start.ts';
export type { NatObservations, PeerStatus, RemotePath, TunnelStatus } from './status.ts';

/**
 * The gateway's public surface. The tunnel (gateway/tunnel/) implements Tunnel and is
 * passed to startGateway({ tunnel }); at the far end it must dial only through the peer's
 * LocalDialer (or check isLocalPodEndpoint itself) so a gateway never reaches anything but
 * the current endpoints of pods on its own node.
 */
export { type Gateway, type GatewayOptions, startGateway } from './gateway.ts';
export { isEndpointOnNode, isLocalPodEndpoint } from './local-endpoint.ts';
export { loadCatalog, saveCatalog } from './persist.ts';
export {
  InProcessTunnel,
  LocalDialer,
  type RemotePath,
  type StreamTarget,
  type Tunnel,
  type TunnelFactory,
} from './streams.ts';

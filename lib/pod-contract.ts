/**
 * The numbers the webhook, the init container and the sidecar must agree on (docs/design.md,
 * the pod contract): the sidecar's identity, which the capture rules exempt, and its ports,
 * which the rules redirect to and the sidecar listens on. Each part's defaults come from here,
 * so a change is made once; each can still be given another value by flag or config, and the
 * webhook passes the same one to both containers.
 */
import { GATEWAY_PORT } from './gateway-protocol.ts';

export const POD_CONTRACT = Object.freeze({
  /** The sidecar's uid and gid: its own traffic is never captured. */
  proxyUid: 1337,
  proxyGid: 1337,
  /** Outbound TCP, redirected by the init's nat rules. */
  proxyPort: 15001,
  /** The sidecar's DNS server (UDP and TCP), where the pod's DNS is redirected. */
  dnsPort: 15053,
  /** The transparent UDP listener (TPROXY) of a pod with capture-udp. */
  udpPort: 15006,
  /** GET /ready (the kubelet's probes). */
  healthPort: 15021,
  /** GET /metrics. */
  metricsPort: 15020,
  /** The node's gateway, on the host IP. */
  gatewayPort: GATEWAY_PORT,
});

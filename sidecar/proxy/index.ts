/** The sidecar's transparent TCP/HTTP proxy (docs/proxy.md). */
export { type Dialer, type DialResult, directDialer, GatewayDialer, RoutingDialer } from './dialer.ts';
export { Balancer, type BalancerOptions, type Choice } from './lb.ts';
export { createProxyMetrics, type ProxyMetrics } from './metrics.ts';
export { type OriginalDst, originalDst } from './original-dst.ts';
export { OutboundProxy, type ProxyOptions } from './proxy.ts';
export { l7Protocol, type Route, RouteTable, serviceTargets, type Target } from './route.ts';

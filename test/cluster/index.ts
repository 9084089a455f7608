// The local test cluster: a real control plane and a node agent that runs pods in network
// namespaces. See README.md beside this file.
export { ControlPlane, type ControlPlaneOptions, ensureKubernetesBinaries } from './control-plane.ts';
export { NodeAgent, type NodeAgentOptions, type TestNode } from './node-agent.ts';

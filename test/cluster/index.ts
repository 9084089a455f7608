// The local test cluster: a real control plane and real nodes (kubelet + containerd + CNI in
// lab network namespaces). See README.md beside this file.
export { ControlPlane, type ControlPlaneOptions, ensureKubernetesBinaries } from './control-plane.ts';
export { RealNode, type RealNodeSpec } from './real-node.ts';

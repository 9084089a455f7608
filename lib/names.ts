/**
 * Kubernetes name forms, checked wherever a name comes from outside (protocol lines, peer
 * messages, catalog entries).
 */

/** RFC 1123 label (namespaces, port names): at most 63 characters. */
export const isDnsLabel = (s: string): boolean => s.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(s);

/** RFC 1123 subdomain (pod and node names): at most 253 characters. */
export const isDnsSubdomain = (s: string): boolean =>
  s.length <= 253 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(s);

/** A uid as the API server writes it (a UUID); lenient on form, strict on characters and size. */
export const isUid = (s: string): boolean => /^[A-Za-z0-9-]{1,64}$/.test(s);

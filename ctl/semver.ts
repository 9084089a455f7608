/**
 * Versions as edgemesh images carry them, and how two compare.
 *
 * An image tag is `<version>` (`ghcr.io/edgemesh/edgemesh:0.1.0`, the release) or
 * `<version>-<12 hex>` (`localhost/edgemesh:0.1.0-4f2a9c01d3be`, scripts/image: the version
 * and the image ID, docs/image.md). The 12-hex suffix is the build, not a semver pre-release;
 * any other suffix is one (`0.2.0-rc.1`). A tag that is not a version (`latest`, a digest
 * only) gives no version: skew against it cannot be told, and is reported as such.
 */

export interface ImageVersion {
  /** `0.1.0`, `0.2.0-rc.1`; undefined when the tag is not a version. */
  version: string | undefined;
  /** scripts/image's 12 hex digits of the image ID, when the tag has them. */
  build: string | undefined;
}

const SEMVER = /^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$/;
const BUILD = /^[0-9a-f]{12}$/;

/** The version in an image reference's tag. Pure. */
export function imageVersion(image: string): ImageVersion {
  const withoutDigest = image.split('@')[0];
  // The tag is after the last ':' that follows the last '/' (a registry host may have a port).
  const slash = withoutDigest.lastIndexOf('/');
  const colon = withoutDigest.lastIndexOf(':');
  if (colon <= slash) return { version: undefined, build: undefined };
  let tag = withoutDigest.slice(colon + 1);
  let build: string | undefined;
  const dash = tag.lastIndexOf('-');
  if (dash > 0 && BUILD.test(tag.slice(dash + 1))) {
    build = tag.slice(dash + 1);
    tag = tag.slice(0, dash);
  }
  const m = SEMVER.exec(tag);
  if (!m) return { version: undefined, build: undefined };
  return { version: tag.replace(/^v/, '').replace(/\+.*$/, ''), build };
}

/** Semantic-version precedence (semver.org §11): negative, 0 or positive. Both must parse. Pure. */
export function compareVersions(a: string, b: string): number {
  const pa = SEMVER.exec(a);
  const pb = SEMVER.exec(b);
  if (!pa || !pb) throw new Error(`not a version: ${JSON.stringify(pa ? b : a)}`);
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return Math.sign(d);
  }
  const [ra, rb] = [pa[4], pb[4]];
  if (ra === undefined || rb === undefined) return ra === rb ? 0 : ra === undefined ? 1 : -1;
  const xa = ra.split('.');
  const xb = rb.split('.');
  for (let i = 0; i < Math.max(xa.length, xb.length); i++) {
    if (xa[i] === undefined) return -1;
    if (xb[i] === undefined) return 1;
    const na = /^\d+$/.test(xa[i]);
    const nb = /^\d+$/.test(xb[i]);
    if (na && nb) {
      const d = Number(xa[i]) - Number(xb[i]);
      if (d !== 0) return Math.sign(d);
    } else if (na !== nb) return na ? -1 : 1;
    else if (xa[i] !== xb[i]) return xa[i] < xb[i] ? -1 : 1;
  }
  return 0;
}

export const isVersion = (s: string): boolean => SEMVER.test(s);

/** How a running version relates to the client's. */
export type Skew = 'same' | 'older' | 'newer' | 'unknown';

/** `running` against `client`; `unknown` when either is not a version. Pure. */
export function skewOf(running: string | undefined, client: string): Skew {
  if (running === undefined || !isVersion(running) || !isVersion(client)) return 'unknown';
  const d = compareVersions(running, client);
  return d === 0 ? 'same' : d < 0 ? 'older' : 'newer';
}

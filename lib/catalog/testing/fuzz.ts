/**
 * Fuzz targets for catalog JSON from outside the process (test/harness/fuzz.ts runs them):
 * catalog files and state files (validate.ts) and the feed a sidecar reads from its gateway
 * (feed.ts: line splitting, line decoding, applying updates in order as feed-source.ts does).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { check, type FuzzTarget, mutateBytes, mutateJson, type Rng } from '../../../test/harness/fuzz.ts';
import { EdgemeshError, ErrorCodes } from '../../errors.ts';
import { decodeFeedLine, encodeFeedLine, type FeedLine, LineSplitter } from '../feed.ts';
import { applyUpdate } from '../store.ts';
import type { Catalog, CatalogUpdate } from '../types.ts';
import { parseCatalogJSON, validateCatalog } from '../validate.ts';

const TESTDATA = join(import.meta.dirname, '..', 'testdata');
/** The golden catalogs of the builder's tests: real shapes (dual stack, headless, ExternalName...). */
export const CATALOGS: readonly Catalog[] = readdirSync(TESTDATA)
  .filter((f) => f.endsWith('.golden.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(TESTDATA, f), 'utf8')).catalog as Catalog);

/** A catalog error (EDGEMESH_ERR_CATALOG) or one of feed.ts's plain Errors that say what is wrong. */
const isCatalogError = (err: Error) =>
  (err instanceof EdgemeshError && err.code === ErrorCodes.CATALOG) ||
  (err.constructor === Error && err.message.length > 0);

export interface CatalogInput {
  text: string;
}

/**
 * parseCatalogJSON on mutated catalogs. Properties: only EDGEMESH_ERR_CATALOG; an accepted
 * catalog validates again, equal, after a JSON round trip (canonical output).
 */
export const catalogTarget: FuzzTarget<CatalogInput> = {
  name: 'catalog validation (lib/catalog/validate.ts)',
  input(rng) {
    const text = mutateJson(rng, rng.pick(CATALOGS));
    return { text: rng.chance(0.1) ? mutateBytes(rng, [Buffer.from(text)]).toString('utf8') : text };
  },
  parse: ({ text }) => parseCatalogJSON(text, 'fuzz'),
  verify(_input, { value }) {
    if (!value) return;
    const again = validateCatalog(JSON.parse(JSON.stringify(value)));
    check(isDeepStrictEqual(again, value), () => 'a validated catalog changed on re-validation');
  },
  expected: (err) => err instanceof EdgemeshError && err.code === ErrorCodes.CATALOG,
  show: (i) => i.text,
};

/** A plausible feed: a snapshot, then increments and keepalives in revision order. */
function feedLines(rng: Rng): FeedLine[] {
  const catalog = rng.pick(CATALOGS);
  let revision = catalog.revision;
  const lines: FeedLine[] = [{ type: 'snapshot', catalog }];
  const services = Object.entries(catalog.services);
  const pods = Object.entries(catalog.pods);
  const nodes = Object.entries(catalog.nodes);
  for (let n = rng.int(6); n > 0; n--) {
    const drop = rng.chance(0.3);
    const pick = rng.int(4);
    if (pick === 0 && services.length > 0) {
      const [key, entry] = rng.pick(services);
      lines.push({ type: 'service', revision: ++revision, key, entry: drop ? null : entry });
    } else if (pick === 1 && pods.length > 0) {
      const [ip, pod] = rng.pick(pods);
      lines.push({ type: 'pod', revision: ++revision, ip, pod: drop ? null : pod });
    } else if (pick === 2 && nodes.length > 0) {
      const [name, node] = rng.pick(nodes);
      lines.push({ type: 'node', revision: ++revision, name, node: drop ? null : node });
    } else lines.push({ type: 'keepalive', revision });
  }
  return lines;
}

export interface FeedInput {
  bytes: Buffer;
  /** Where the stream is cut into reads. */
  cuts: number[];
}

export interface FeedResult {
  catalog: Catalog | undefined;
  lines: FeedLine[];
}

/** Small enough that the fuzz reaches it; the real bound is MAX_FEED_LINE_BYTES. */
const FUZZ_MAX_LINE = 256 * 1024;

/**
 * The sidecar's reading of a feed: bytes cut into reads → LineSplitter → decodeFeedLine →
 * applyUpdate, the steps feed-source.ts takes (which drops the connection on the first
 * error). Properties: only catalog errors or feed.ts's own; every decoded line round-trips
 * through encodeFeedLine; the catalog the updates build is itself a valid catalog.
 */
export const feedTarget: FuzzTarget<FeedInput> = {
  name: 'catalog feed lines (lib/catalog/feed.ts)',
  input(rng) {
    const lines = feedLines(rng).map((l) =>
      rng.chance(0.3) ? `${mutateJson(rng, l)}\n` : encodeFeedLine(l),
    );
    let bytes: Buffer = Buffer.from(lines.join(''));
    if (rng.chance(0.2)) bytes = mutateBytes(rng, [bytes]);
    const cuts = Array.from({ length: rng.int(4) }, () => rng.int(bytes.length + 1)).sort((a, b) => a - b);
    return { bytes, cuts };
  },
  parse({ bytes, cuts }): FeedResult {
    const splitter = new LineSplitter(FUZZ_MAX_LINE);
    let catalog: Catalog | undefined;
    const lines: FeedLine[] = [];
    let from = 0;
    for (const cut of [...cuts, bytes.length]) {
      for (const text of splitter.push(bytes.subarray(from, cut))) {
        const line = decodeFeedLine(text);
        lines.push(line);
        if (line.type !== 'keepalive') catalog = applyUpdate(catalog, line as CatalogUpdate) ?? catalog;
      }
      from = cut;
    }
    return { catalog, lines };
  },
  verify(_input, { value }) {
    if (!value) return;
    const { catalog, lines } = value as FeedResult;
    for (const line of lines) {
      const again = decodeFeedLine(encodeFeedLine(line).slice(0, -1));
      check(
        isDeepStrictEqual(again, line),
        () => `feed line changed on re-encoding: ${encodeFeedLine(line)}`,
      );
    }
    if (catalog) {
      const again = validateCatalog(JSON.parse(JSON.stringify(catalog)));
      check(
        isDeepStrictEqual(again, catalog),
        () => 'updates built a catalog that does not validate as itself',
      );
    }
  },
  expected: isCatalogError,
  show: (i) => `${JSON.stringify(i.bytes.toString('latin1'))} cuts=${i.cuts.join(',')}`,
};

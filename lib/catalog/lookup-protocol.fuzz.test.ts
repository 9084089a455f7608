import { isIPv4 } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { fuzzSeed, mutateJson, Rng } from '../../test/harness/fuzz.ts';
import { decodeReply } from './lookup-protocol.ts';
import { CATALOGS } from './testing/fuzz.ts';
import {
  checkNamespace,
  checkPod,
  checkServiceEntry,
  validateNamespace,
  validatePod,
  validateServiceEntry,
} from './validate.ts';

/** The outcome of one validator on its own parse of `text`: the value, or the error's class and message. */
function outcome(text: string, validate: (v: unknown) => unknown): { value?: unknown; error?: string } {
  try {
    return { value: validate(JSON.parse(text)) };
  } catch (err) {
    return { error: `${(err as Error).name}: ${(err as Error).message}` };
  }
}

// A LOOKUP answer's records are checked in place (checkServiceEntry & co., no copy): exactly
// as strict as the copying validators, i.e. the same error for the same bad input and the same
// value for a good one. Differential, on mutated real shapes.
describe('fuzz: in-place checks of a LOOKUP answer against the copying validators', () => {
  const services = CATALOGS.flatMap((c) => Object.values(c.services));
  const pods = CATALOGS.flatMap((c) => Object.values(c.pods));
  const pairs: {
    what: string;
    corpus: readonly unknown[];
    copy: (v: unknown) => unknown;
    inPlace: (v: unknown) => unknown;
  }[] = [
    { what: 'service entry', corpus: services, copy: validateServiceEntry, inPlace: checkServiceEntry },
    { what: 'pod', corpus: pods, copy: validatePod, inPlace: checkPod },
    { what: 'namespace', corpus: [{ name: 'default' }], copy: validateNamespace, inPlace: checkNamespace },
  ];
  for (const { what, corpus, copy, inPlace } of pairs) {
    it(`${what}: same error or same value on 3,000 mutated inputs`, () => {
      const rng = new Rng(fuzzSeed(1313));
      let rejected = 0;
      for (let i = 0; i < 3_000; i++) {
        const text = mutateJson(rng, rng.pick(corpus));
        const a = outcome(text, copy);
        const b = outcome(text, inPlace);
        if (a.error) rejected++;
        if (a.error !== b.error || !isDeepStrictEqual(a.value, b.value))
          expect({ text, inPlace: b }, 'in-place check differs from the copy').toEqual({ text, inPlace: a });
      }
      expect(rejected).toBeGreaterThan(300); // the mutations reach the checks
    });
  }

  it('a whole answer line: decodeReply returns the parsed records, canonical IPs written back', () => {
    const entry = structuredClone(services.find((e) => e.service.clusterIPs.some((ip) => ip.includes(':'))));
    expect(entry, 'a dual-stack service in the golden catalogs').toBeDefined();
    const e = entry as NonNullable<typeof entry>;
    const v6 = e.service.clusterIPs.findIndex((ip) => ip.includes(':'));
    const canonical = e.service.clusterIPs[v6];
    e.service.clusterIPs[v6] = canonical.toUpperCase();
    const key = `${e.service.namespace}/${e.service.name}`;
    const line = JSON.stringify({
      type: 'answer',
      id: 1,
      revision: 3,
      services: { [key]: e },
      pods: {},
      namespaces: {},
    });
    const reply = decodeReply(line);
    expect(reply.type).toBe('answer');
    if (reply.type !== 'answer') return;
    expect(reply.services[key].service.clusterIPs[v6]).toBe(canonical);
    expect(reply.services[key]).toEqual(validateServiceEntry(JSON.parse(line).services[key]));
  });

  it("accepts a dotted quad exactly when node:net's isIPv4 does (validate.ts tests them with its own pattern)", () => {
    const rng = new Rng(fuzzSeed(4242));
    const octet = () =>
      rng.pick([
        '0',
        '00',
        '01',
        '9',
        '10',
        '99',
        '100',
        '199',
        '200',
        '249',
        '250',
        '255',
        '256',
        '300',
        '1000',
        '',
        'a',
      ]);
    let accepted = 0;
    for (let i = 0; i < 5_000; i++) {
      const n = rng.chance(0.9) ? 4 : rng.pick([3, 5]);
      const text = Array.from({ length: n }, octet).join(rng.chance(0.95) ? '.' : ',');
      const pod = { ip: text, namespace: 'ns', name: 'p', nodeName: 'n' };
      const ok = outcome(JSON.stringify(pod), checkPod).error === undefined;
      if (ok) accepted++;
      if (ok !== isIPv4(text)) expect({ text, accepted: ok }).toEqual({ text, accepted: isIPv4(text) });
    }
    expect(accepted).toBeGreaterThan(500);
  });
});

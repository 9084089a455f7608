/**
 * The `udpPort` injection knob: the init's TPROXY rules and the sidecar's transparent
 * listener must agree on one port, so the webhook gives both the same `--udp-port`, only to
 * pods that capture UDP and only when the config sets one (unset: both keep 15006, and every
 * admission golden stays as it was). Goldens: testdata/udp-port/<case>.args.golden.json, the
 * two containers' args; then each container's own flag parser reads its args back.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, describe, expect, it } from 'vitest';
import { configFromFlags, initCommand } from '../init/cli.ts';
import { parseCommand } from '../lib/cli.ts';
import { sidecarCommand } from '../sidecar/cli.ts';
import { GoldenDir } from '../test/harness/golden.ts';
import { review } from './admission.ts';
import { type InjectionConfig, resolveConfig } from './config.ts';
import { INIT_NAME, PROXY_NAME } from './inject.ts';
import { applyPatch } from './manual.ts';

const admission = join(import.meta.dirname, 'testdata', 'admission');
const golden = new GoldenDir(join(import.meta.dirname, 'testdata', 'udp-port'));
const image = 'registry.example/edgemesh:test';

/** The init's and the sidecar's args after injecting fixture `name` with `config`. */
function injectedArgs(name: string, config: InjectionConfig): { init: string[]; sidecar: string[] } {
  const body = JSON.parse(readFileSync(join(admission, `${name}.json`), 'utf8'));
  const { decision } = review(body, config);
  expect(decision.outcome).toBe('injected');
  const pod = applyPatch(body.request.object as V1Pod, decision.patch ?? []);
  const inits = pod.spec?.initContainers ?? [];
  const args = (n: string) => inits.find((c) => c.name === n)?.args ?? [];
  return { init: args(INIT_NAME), sidecar: args(PROXY_NAME) };
}

/** The UDP port each container would use, read by its own CLI (args[0] is the subcommand). */
function portsParsed(args: { init: string[]; sidecar: string[] }) {
  const init = configFromFlags(parseCommand(initCommand.spec, args.init.slice(1), {}));
  const sidecar = parseCommand(sidecarCommand.spec, args.sidecar.slice(1), {});
  return { init: init.capture.udpPort, sidecar: sidecar['udp-port'] };
}

const cases: Array<[string, string, Record<string, unknown>, number]> = [
  // [golden name, admission fixture, config, the port both must use]
  ['capture-udp-default', 'capture-udp', {}, 15006],
  ['capture-udp-16006', 'capture-udp', { udpPort: 16006 }, 16006],
  ['no-udp-capture-16006', 'minimal-pod', { udpPort: 16006 }, 15006],
];

describe('udpPort knob', () => {
  it.each(cases)('%s', (goldenName, fixture, partial, port) => {
    const args = injectedArgs(fixture, resolveConfig({ image, ...partial }));
    golden.expect(`${goldenName}.args.golden.json`, `${JSON.stringify(args, null, 2)}\n`);
    // Both read the same port; a pod that does not capture UDP gets no UDP flag at all.
    expect(portsParsed(args)).toEqual({ init: port, sidecar: port });
    const udpFlags = [...args.init, ...args.sidecar].filter((a) => a.startsWith('--udp-port'));
    expect(udpFlags).toEqual(
      'udpPort' in partial && fixture === 'capture-udp' ? Array(2).fill(`--udp-port=${port}`) : [],
    );
  });

  it.each([
    [{ udpPort: 0 }, 'udpPort must be an integer 1..65535, got 0'],
    [{ udpPort: 65536 }, 'udpPort must be an integer 1..65535, got 65536'],
    [{ udpPort: '16006' }, 'udpPort must be an integer 1..65535, got "16006"'],
    [{ udpPort: 1.5 }, 'udpPort must be an integer 1..65535, got 1.5'],
    [{ udpPort: null }, 'udpPort must be an integer 1..65535, got null'],
    [{ udpPort: 15053 }, 'udpPort must differ from dnsPort (both 15053)'],
    [{ udpPort: 5353, dnsPort: 5353 }, 'udpPort must differ from dnsPort (both 5353)'],
  ])('refuses %j naming the key and the value', (partial, message) => {
    expect(() => resolveConfig(partial, 'webhook.yaml')).toThrow(`webhook.yaml: ${message}`);
  });

  it('is unset by default', () => {
    expect(resolveConfig({}).udpPort).toBeUndefined();
  });

  afterAll(() => expect(golden.unused('.golden.json')).toEqual([]));
});

// What `edgemesh init` adds to a pod's start: wall time of the real CLI installing IPv4+IPv6
// capture in a fresh network namespace (as in a new pod), beside two baselines measured in
// the same run: applying the same rules with a bare iptables-restore (the floor for any
// init), and starting the same Node binary with an empty script (the runtime's floor).
// Needs root (network namespaces). RUNS fresh namespaces per variant, bounded in count.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { EDGEMESH_BIN, NetnsLab } from '../test/harness/netns.ts';
import { printTable, summarize } from './lib/stats.ts';

const RUNS = 7;
const node = new URL('../node_modules/.bin/node', import.meta.url).pathname;
const rules = execFileSync(EDGEMESH_BIN, ['init', '--dry-run', '--ipv6=true'], { encoding: 'utf8' });
const [v4Rules, v6Rules] = rules.split('# IPv6').map((part, i) => (i === 0 ? part : `#${part}`));

type Variant = { name: string; run: (ns: string) => void };
const inNs = (ns: string, argv: string[], input?: string) =>
  execFileSync('ip', ['netns', 'exec', ns, ...argv], { input, stdio: ['pipe', 'ignore', 'ignore'] });

const variants: Variant[] = [
  {
    name: 'baseline: iptables-nft-restore + ip6tables-nft-restore of the same rules',
    run: (ns) => {
      inNs(ns, ['iptables-nft-restore', '--noflush'], v4Rules);
      inNs(ns, ['ip6tables-nft-restore', '--noflush'], v6Rules);
    },
  },
  { name: 'baseline: node with an empty script', run: (ns) => inNs(ns, [node, '-e', '0']) },
  {
    name: 'edgemesh init --dry-run (start-up and rule building, no iptables)',
    run: (ns) => inNs(ns, [EDGEMESH_BIN, 'init', '--dry-run', '--ipv6=true']),
  },
  {
    name: 'edgemesh init (nft)',
    run: (ns) => inNs(ns, [EDGEMESH_BIN, 'init', '--ipv6=true', '--iptables-backend=nft']),
  },
  {
    name: 'edgemesh init (legacy)',
    run: (ns) => inNs(ns, [EDGEMESH_BIN, 'init', '--ipv6=true', '--iptables-backend=legacy']),
  },
];

NetnsLab.cleanUpOnInterrupt();
const lab = new NetnsLab('emi');
const results = new Map<string, number[]>();
try {
  let i = 0;
  for (let round = 0; round < RUNS; round++) {
    for (const v of variants) {
      const ns = await lab.add(`b${i++}`);
      const t0 = performance.now();
      v.run(ns);
      results.set(v.name, [...(results.get(v.name) ?? []), performance.now() - t0]);
    }
  }
} finally {
  await lab.cleanup();
}

const p50 = (name: string) => summarize(results.get(name) ?? []).p50;
const restore = p50(variants[0].name);
const nodeFloor = p50(variants[1].name);
printTable(
  `edgemesh init in a fresh namespace, ${RUNS} runs each (ms)`,
  ['variant', 'p50 ms', 'max ms', '× restore', '× node start'],
  variants.map((v) => {
    const s = summarize(results.get(v.name) ?? []);
    return [v.name, s.p50, s.max, s.p50 / restore, s.p50 / nodeFloor];
  }),
);

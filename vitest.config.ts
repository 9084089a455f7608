import { defineConfig } from 'vitest/config';

// The project pins Node 24 (node_modules/.bin/node). node_modules/.bin/vitest's shebang finds
// the first `node` on PATH, which outside npm scripts may be the machine's older one.
if (Number(process.versions.node.split('.')[0]) < 24) {
  throw new Error(
    `edgemesh tests need Node 24, this is ${process.version}: run \`npm test\`, \`npx vitest run <paths>\`, or put node_modules/.bin first on PATH`,
  );
}

// Two layers: pure/unit tests run in parallel; system tests (network namespaces, real
// iptables, the local control plane) run one file at a time because they share the
// kernel's namespace list and this machine has only two cores.
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['**/*.test.ts'],
          exclude: ['**/node_modules/**', '**/*.netns.test.ts', '**/*.e2e.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'system',
          include: ['**/*.netns.test.ts', '**/*.e2e.test.ts'],
          exclude: ['**/node_modules/**'],
          fileParallelism: false,
          // This machine is shared and noisy: a system test that fails once is run once more,
          // and .ci/run lists every test that needed it (its first failure is kept in the report).
          retry: 1,
          testTimeout: 120_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});

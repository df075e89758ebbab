import { defineConfig } from 'vitest/config';

// The real-node end-to-end tests alone (`npm run test:real`, root): real Kubernetes built from the Go
// module proxy on first use. `npm test` runs them too.
export default defineConfig({
  test: {
    include: ['test/e2e-real.test.ts', 'test/e2e-real-two-node.test.ts', 'test/e2e-real-fix-loop.test.ts', 'test/e2e-kubectl-plugin.test.ts'],
    fileParallelism: false,
    testTimeout: 420_000,
    hookTimeout: 40 * 60_000,
    reporters: ['default'],
  },
});

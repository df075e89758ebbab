import { defineConfig } from 'vitest/config';

// The real-node end-to-end tests (`npm run test:real`, root): real Kubernetes built from the Go module
// proxy on first use. Kept out of the default run until they have passed three runs in a row.
export default defineConfig({
  test: {
    include: ['test/**/*.realtest.ts'],
    fileParallelism: false,
    testTimeout: 420_000,
    hookTimeout: 40 * 60_000,
    reporters: ['default'],
  },
});

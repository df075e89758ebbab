import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // bin/rolltrace.mjs runs dist/: build it when a source changed since the last build
    globalSetup: ['test/helpers/global-build.ts'],
    // end-to-end tests share the machine's network stack and tools: one file at a time keeps them honest
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
    reporters: ['default'],
  },
});

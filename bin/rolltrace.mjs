#!/usr/bin/env node
// rolltrace entry point: runs the compiled JavaScript in dist/ (`npm run build`; npm builds it on
// install from git, on `npm pack`, and before `npm test` / `npm run demo`). No TypeScript at run time.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('rolltrace: dist/ is missing: run `npm run build` in the rolltrace checkout\n');
  process.exit(2);
}
// `record`: bpftrace's compile (the slowest source to come up) starts before the CLI and the recorder load;
// the ebpf source takes it over (recorder/sources/ebpf/index.ts launchEarly)
const ebpf = process.argv[2] === 'record'
  ? await import(new URL('../dist/recorder/sources/ebpf/index.js', import.meta.url).href).catch(() => null) : null;
ebpf?.launchEarly(process.argv);
const { main: run } = await import(main.href);
try {
  process.exitCode = await run(process.argv);
} finally {
  ebpf?.discardEarly();
}

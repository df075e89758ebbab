#!/usr/bin/env node
// rolltrace entry point: runs the compiled JavaScript in dist/ (`npm run build`; npm builds it on
// install from git, on `npm pack`, and before `npm test` / `npm run demo`). No TypeScript at run time.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('rolltrace: dist/ is missing: run `npm run build` in the rolltrace checkout\n');
  process.exit(2);
}
const { main: run } = await import(main.href);
process.exitCode = await run(process.argv);

#!/usr/bin/env node
// kubectl plugin entry point: `kubectl rolltrace record deploy/NAME ...` (kubectl finds kubectl-rolltrace
// on PATH; npm install -g puts it there). Runs the compiled code in dist/ like bin/rolltrace.mjs.
import { existsSync } from 'node:fs';

const main = new URL('../dist/cli/kubectl/main.js', import.meta.url);
if (!existsSync(main)) {
  process.stderr.write('kubectl rolltrace: dist/ is missing: run `npm run build` in the rolltrace checkout\n');
  process.exit(2);
}
const { pluginMain } = await import(main.href);
// exit now: an aborted wait may still hold a timer or a socket (stdout and stderr are synchronous on Linux)
process.exit(await pluginMain(process.argv.slice(2)));

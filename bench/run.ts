/**
 * `npm run bench`: every benchmark of bench/, one after the other (root: they create network
 * namespaces and run the recorder). `npm run bench -- NAME...` runs only those, e.g.
 * `npm run bench -- tracing-overhead`. Each prints its own table of ratios measured in the same run.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
/** name -> arguments (defaults sized for a 2-core machine) */
const BENCHES: Record<string, string[]> = {
  'tracing-overhead': [],
  'capture-rate': [],
  'analyze-vs-tshark': [],
};

const asked = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const unknown = asked.filter((a) => !(a in BENCHES));
if (unknown.length) {
  process.stderr.write(`bench: unknown benchmark ${unknown.join(', ')} (known: ${Object.keys(BENCHES).join(', ')})\n`);
  process.exit(2);
}
let failed = 0;
for (const name of asked.length ? asked : Object.keys(BENCHES)) {
  process.stdout.write(`\n=== bench/${name}.ts\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(HERE, `${name}.ts`), ...BENCHES[name]!], { stdio: 'inherit' });
  if (r.status !== 0) { failed++; process.stderr.write(`bench: ${name} failed (exit ${r.status ?? r.signal})\n`); }
}
process.exit(failed ? 1 : 0);

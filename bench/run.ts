/**
 * `npm run bench`: every benchmark of bench/, one after the other (root: they create network
 * namespaces and run the recorder). `npm run bench -- NAME [options]...` runs only those, e.g.
 * `npm run bench -- tracing-overhead --rounds 5`. Each prints its own table of ratios measured in the same run.
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
  // issue 12: capture CPU per packet vs tcpdump -w (tcpreplay over a veth), import/analyze/size/RSS of a 1M-packet pcap vs tcpdump -r and tshark
  'capture-cpu': ['--packets', '600000', '--loops', '5'],
  offline: ['--packets', '1000000'],
  ready: ['--runs', '5'],
};

// `NAME [its options]...`: a known name starts a group, what follows it (until the next name) is passed on
const groups: Array<[string, string[]]> = [];
for (const a of process.argv.slice(2)) {
  if (a in BENCHES) groups.push([a, []]);
  else if (groups.length) groups.at(-1)![1].push(a);
  else {
    process.stderr.write(`bench: unknown benchmark ${a} (known: ${Object.keys(BENCHES).join(', ')})\n`);
    process.exit(2);
  }
}
let failed = 0;
for (const [name, args] of groups.length ? groups : Object.keys(BENCHES).map((n) => [n, []] as [string, string[]])) {
  process.stdout.write(`\n=== bench/${name}.ts ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(HERE, `${name}.ts`), ...(args.length ? args : BENCHES[name]!)], { stdio: 'inherit' });
  if (r.status !== 0) { failed++; process.stderr.write(`bench: ${name} failed (exit ${r.status ?? r.signal})\n`); }
}
process.exit(failed ? 1 : 0);

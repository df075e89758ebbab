/**
 * Bench: start-up of the CLI users run (bin/rolltrace.mjs -> compiled dist/) against the same code
 * through tsx (how bin ran before the build step), and against a bare `node -e 0`. Median and minimum
 * of N runs each, and the ratio to tsx. `record` start-up is measured as the import of the recorder and
 * every source module (what stands between launch and the first source going live).
 *
 *   npx tsx bench/startup.ts [--runs N]        (npm run build first)
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const N = Number(argv[argv.indexOf('--runs') + 1] ?? 0) || 15;
if (!existsSync(join(ROOT, 'dist/cli/main.js'))) { process.stderr.write('bench: run `npm run build` first\n'); process.exit(2); }
const BUNDLE = join(ROOT, 'fixtures/bundles/race-synthetic.rtb');
const SOURCES = ['packets', 'strace', 'ebpf', 'nftables', 'conntrack', 'kube', 'probe'];

/** the CLI through tsx, as bin/rolltrace.mjs did before `npm run build` */
const viaTsx = (args: string[]) => ['--import', 'tsx', '--input-type=module', '-e',
  `const { main } = await import(${JSON.stringify(join(ROOT, 'cli/main.ts'))}); process.exitCode = await main(['node', 'rolltrace', ...${JSON.stringify(args)}]);`];
const compiled = (args: string[]) => [join(ROOT, 'bin/rolltrace.mjs'), ...args];
const importRecorder = (ext: 'ts' | 'js', base: string) => [...(ext === 'ts' ? ['--import', 'tsx'] : []), '--input-type=module', '-e',
  `await import(${JSON.stringify(join(base, `recorder/record.${ext}`))}); for (const s of ${JSON.stringify(SOURCES)}) await import(${JSON.stringify(base)} + '/recorder/sources/' + s + '/index.${ext}');`];

function time(args: string[]): { median: number; min: number } {
  const t: number[] = [];
  for (let i = 0; i < N; i++) {
    const s = process.hrtime.bigint();
    const r = spawnSync(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0 && r.status !== 1) throw new Error(`node ${args.join(' ').slice(0, 120)}: exit ${r.status}: ${String(r.stderr).slice(0, 300)}`);
    t.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  t.sort((a, b) => a - b);
  return { median: t[N >> 1]!, min: t[0]! };
}

const cases: Array<[string, string[], string[]]> = [
  ['rolltrace --version', viaTsx(['--version']), compiled(['--version'])],
  ['rolltrace analyze (race fixture)', viaTsx(['analyze', BUNDLE]), compiled(['analyze', BUNDLE])],
  ['rolltrace analyze --format json', viaTsx(['analyze', BUNDLE, '--format', 'json']), compiled(['analyze', BUNDLE, '--format', 'json'])],
  ['record: import recorder + 7 sources', importRecorder('ts', ROOT), importRecorder('js', join(ROOT, 'dist'))],
];
const bare = time(['-e', '0']);
console.log(`${N} runs each, milliseconds (median / min); node -e 0: ${bare.median.toFixed(0)} / ${bare.min.toFixed(0)}`);
console.log(`${'case'.padEnd(38)} ${'tsx'.padStart(12)} ${'dist'.padStart(12)}  dist/tsx`);
for (const [name, a, b] of cases) {
  const x = time(a);
  const y = time(b);
  console.log(`${name.padEnd(38)} ${`${x.median.toFixed(0)} / ${x.min.toFixed(0)}`.padStart(12)} ${`${y.median.toFixed(0)} / ${y.min.toFixed(0)}`.padStart(12)}  ${(y.median / x.median).toFixed(2)}`);
}

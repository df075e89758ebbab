/**
 * Bench (issue 12 goal 2): a deterministic synthetic 1M-packet rollout capture (test/helpers/synth-pcap.ts,
 * generated here, never committed), read in one run by `tcpdump -nn -r`, `tshark -r` and rolltrace:
 * `import` (pcap -> bundle) and `analyze` of the bundle. Wall and CPU time, peak RSS (GNU time), the
 * bundle's size, each as a ratio to tcpdump's read of the same file.
 *
 *   npx tsx bench/offline.ts [--packets N] [--keep]     (npm run build first: times the compiled CLI)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSynthPcap } from '../test/helpers/synth-pcap.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'bin', 'rolltrace.mjs');

export interface Timed { wall: number; cpu: number; rssMb: number; code: number }

/** run under GNU time: wall s, user+sys CPU s, peak RSS MB (the command and the children it waited for) */
export function timed(cmd: string, args: string[]): Timed {
  const r = spawnSync('/usr/bin/time', ['-f', 'RT_TIME %e %U %S %M', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20 });
  const m = /RT_TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr ?? '');
  if (!m) throw new Error(`${cmd} ${args.join(' ')}: no timing (${(r.stderr ?? '').slice(-300)})`);
  // GNU time prints "Command exited with non-zero status N" first; the status is the command's
  return { wall: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), rssMb: Number(m[4]) / 1024, code: r.status ?? -1 };
}

export interface OfflineResult {
  packets: number; pcapMb: number; bundleMb: number; indexed: number;
  tcpdump: Timed; tshark: Timed | null; imp: Timed; analyze: Timed;
}

export function offlineBench(packets: number, keep = false): OfflineResult {
  if (!existsSync(join(ROOT, 'dist/cli/main.js'))) throw new Error('run `npm run build` first');
  const dir = mkdtempSync(join(tmpdir(), 'rt-offline-bench-'));
  try {
    const pcap = join(dir, 'rollout.pcap');
    const st = writeSynthPcap(pcap, packets, 1);
    const bundle = join(dir, 'rollout.rtb');
    const tcpdump = timed('tcpdump', ['-nn', '-r', pcap]);
    const tshark = spawnSync('tshark', ['-v'], { stdio: 'ignore' }).status === 0 ? timed('tshark', ['-n', '-r', pcap]) : null;
    const imp = timed(process.execPath, [BIN, 'import', '--out', bundle, '--pcap', pcap]);
    if (imp.code !== 0) throw new Error(`import failed (exit ${imp.code})`);
    const analyze = timed(process.execPath, [BIN, 'analyze', bundle, '--format', 'json', '--out', join(dir, 'a.json')]);
    if (analyze.code !== 0 && analyze.code !== 1) throw new Error(`analyze failed (exit ${analyze.code})`);
    const q = spawnSync('sqlite3', [bundle, 'SELECT count(*) FROM packets'], { encoding: 'utf8' });
    return {
      packets: st.packets, pcapMb: statSync(pcap).size / 1e6, bundleMb: statSync(bundle).size / 1e6, indexed: Number(q.stdout.trim()) || 0,
      tcpdump, tshark, imp, analyze,
    };
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`kept ${dir}\n`);
  }
}

export function printOffline(r: OfflineResult): boolean {
  const f = (t: Timed) => `${t.wall.toFixed(2)} s wall, ${t.cpu.toFixed(2)} s CPU, ${t.rssMb.toFixed(0)} MB peak RSS`;
  const x = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const impRatio = r.imp.wall / r.tcpdump.wall, anRatio = r.analyze.wall / r.tcpdump.wall, size = r.bundleMb / r.pcapMb;
  const rss = Math.max(r.imp.rssMb, r.analyze.rssMb);
  console.log(`\noffline: ${r.packets} packets, pcap ${r.pcapMb.toFixed(1)} MB (synthetic rollout traffic, test/helpers/synth-pcap.ts)`);
  console.log(`  tcpdump -nn -r       ${f(r.tcpdump)}`);
  if (r.tshark) console.log(`  tshark -n -r         ${f(r.tshark)}  (${x(r.tshark.wall, r.tcpdump.wall)} tcpdump)`);
  console.log(`  rolltrace import     ${f(r.imp)}  -> ${x(r.imp.wall, r.tcpdump.wall)} tcpdump wall, ${x(r.imp.cpu, r.tcpdump.cpu)} CPU${r.tshark ? `, ${x(r.imp.wall, r.tshark.wall)} tshark` : ''}   goal ≤ 2×: ${impRatio <= 2 ? 'met' : 'NOT met'}`);
  console.log(`  rolltrace analyze    ${f(r.analyze)}  -> ${x(r.analyze.wall, r.tcpdump.wall)} tcpdump wall, ${x(r.analyze.cpu, r.tcpdump.cpu)} CPU${r.tshark ? `, ${x(r.analyze.wall, r.tshark.wall)} tshark` : ''}   goal ≤ 0.5×: ${anRatio <= 0.5 ? 'met' : 'NOT met'}`);
  console.log(`  bundle               ${r.bundleMb.toFixed(1)} MB (${r.indexed} index rows) -> ${size.toFixed(2)}× the pcap   goal ≤ 1.3×: ${size <= 1.3 ? 'met' : 'NOT met'}`);
  console.log(`  peak RSS             import ${r.imp.rssMb.toFixed(0)} MB, analyze ${r.analyze.rssMb.toFixed(0)} MB   goal ≤ 200 MB: ${rss <= 200 ? 'met' : 'NOT met'}`);
  return impRatio <= 2 && anRatio <= 0.5 && size <= 1.3 && rss <= 200;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const n = Number(argv[argv.indexOf('--packets') + 1] ?? 0) || 1_000_000;
  printOffline(offlineBench(n, argv.includes('--keep')));
}

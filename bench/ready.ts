/**
 * Bench (issue 12 goal 3): from launch of `rolltrace record` to each source live, read from the bundle
 * (meta.started_ns, meta.sources_live_ns), for the compiled CLI, in a network namespace this bench
 * creates and removes (`--iface lo`, no kube, no strace: what needs no cluster). Median and max of N runs.
 * Run as root, after `npm run build`:
 *   npx tsx bench/ready.ts [--runs N]
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BIN = join(ROOT, 'bin', 'rolltrace.mjs');

/** ms from launch to `started` and to each source live, per run */
export function readyBench(runs: number): Array<Record<string, number>> {
  if (process.getuid?.() !== 0) throw new Error('ready bench needs root (network namespace, capture, bpftrace)');
  const ns = `rt-ready-${randomBytes(2).toString('hex')}`;
  const dir = mkdtempSync(join(tmpdir(), 'rt-ready-'));
  const out: Array<Record<string, number>> = [];
  try {
    execFileSync('ip', ['netns', 'add', ns]);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    for (let i = 0; i < runs; i++) {
      const b = join(dir, `r${i}.rtb`);
      const launch = Date.now() * 1e6;
      const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, BIN, 'record', '--out', b, '--iface', 'lo', '--no-kube', '--no-strace', '--duration', '1'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`record failed (exit ${r.status}): ${r.stderr.slice(-400)}`);
      const db = new Database(b, { readonly: true });
      const meta = new Map((db.prepare('SELECT key, value FROM meta').all() as Array<{ key: string; value: string }>).map((m) => [m.key, m.value]));
      db.close();
      const row: Record<string, number> = { started: (Number(meta.get('started_ns')) - launch) / 1e6 };
      for (const [k, v] of Object.entries(JSON.parse(meta.get('sources_live_ns') ?? '{}') as Record<string, number>)) row[k] = (v - launch) / 1e6;
      out.push(row);
    }
  } finally {
    try { execFileSync('ip', ['netns', 'del', ns]); } catch { /* gone */ }
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

export function printReady(rows: Array<Record<string, number>>): boolean {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const stat = (k: string) => {
    const v = rows.map((r) => r[k]).filter((x): x is number => typeof x === 'number').sort((a, b) => a - b);
    return { median: v[v.length >> 1] ?? NaN, max: v.at(-1) ?? NaN };
  };
  console.log(`\nready: launch of rolltrace record (--iface lo --no-kube --no-strace) to each source live, ms, ${rows.length} runs (median / max)`);
  let worst = 0;
  for (const k of keys) {
    const s = stat(k);
    if (k !== 'started') worst = Math.max(worst, s.median);
    console.log(`  ${k.padEnd(10)} ${s.median.toFixed(0).padStart(6)} / ${s.max.toFixed(0)}`);
  }
  console.log(`  every source live within 1 s of launch (median of the slowest): ${worst <= 1000 ? 'met' : 'NOT met'}`);
  return worst <= 1000;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const argv = process.argv.slice(2);
  const runs = Number(argv[argv.indexOf('--runs') + 1] ?? 0) || 5;
  printReady(readyBench(runs));
}

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { analyzeBundle } from '../analyzer/analyze.js';
import { estimateOffset, mergeBundles, receiveTimes } from '../analyzer/merge/merge.js';
import { nsFromIso } from '../schemas/analysis.js';
import { damagedFixture, RACE, writeRaceBundle } from './reports-helpers.js';

let dir: string;
let a: string;
let b: string;
const SKEW = 250e6; // node-b's clock runs 250 ms ahead
const API_DELAY_B = 3e6; // node-b receives every watch event 3 ms later than node-a
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'reports-merge-'));
  a = join(dir, 'a.rtb');
  b = join(dir, 'b.rtb');
  writeRaceBundle(a, { node: 'node-a' });
  writeRaceBundle(b, { node: 'node-b', skewNs: SKEW, apiDelayNs: API_DELAY_B, ruleRemovedMs: 1800, withTraffic: false, hostsPod: false });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));


describe('clock offset estimation', () => {
  it('is the median of receive-time differences, robust to an outlier', () => {
    const ref = new Map([['x', 0], ['y', 100], ['z', 200], ['w', 300]]);
    const other = new Map([['x', 50], ['y', 151], ['z', 249], ['w', 9_000], ['only-b', 5]]);
    const s = estimateOffset(ref, other);
    expect(s.samples).toBe(4);
    expect(s.offset_ns).toBe(51); // (50 + 51) / 2 rounded: the 9 µs outlier does not move it
    expect(s.min_ns).toBe(49);
    expect(s.max_ns).toBe(8_700);
    expect(estimateOffset(ref, new Map([['q', 1]]))).toMatchObject({ samples: 0, offset_ns: 0 });
  });
  it('keys API rows by object, resourceVersion and event type', () => {
    const t = receiveTimes([
      { ts_ns: 5, kind: 'Pod', namespace: 'n', name: 'p', uid: 'u', resource_version: '7', event_type: 'MODIFIED' },
      { ts_ns: 9, kind: 'Pod', namespace: 'n', name: 'p', uid: 'u', resource_version: '7', event_type: 'MODIFIED' },
      { ts_ns: 6, kind: 'Pod', namespace: 'n', name: 'p', uid: 'u', resource_version: null, event_type: 'BOOKMARK' },
    ]);
    expect([...t.values()]).toEqual([5]);
  });
});

describe('rolltrace merge', () => {
  it('aligns clocks, keeps nodes, dedups API rows, and the analysis sees rule removal per node', async () => {
    const out = join(dir, 'merged.rtb');
    const res = await mergeBundles([a, b], out);
    expect(res.nodes).toEqual(['node-a', 'node-b']);
    // error bound: the estimate is off by the latency difference (3 ms) at most
    expect(res.offsets['node-b']).toBeGreaterThanOrEqual(SKEW);
    expect(res.offsets['node-b']).toBeLessThanOrEqual(SKEW + API_DELAY_B);
    expect(res.stats['node-b']!.samples).toBe(6); // 6 API rows, both nodes received them all
    expect(statSync(out).mode & 0o777).toBe(0o600); // a merged bundle holds what its inputs held: owner-only, like theirs
    for (const s of ['-wal', '-shm']) expect(existsSync(out + s), s).toBe(false); // one self-contained file
    const db = new Database(out, { readonly: true });
    try {
      const meta = Object.fromEntries((db.prepare('SELECT key, value FROM meta').all() as Array<{ key: string; value: string }>).map((r) => [r.key, r.value]));
      expect(JSON.parse(meta.nodes!)).toEqual(['node-a', 'node-b']);
      expect(JSON.parse(meta.node_clock_offsets!)).toEqual(res.offsets);
      expect(JSON.parse(meta.merged_from!).map((m: { node: string }) => m.node)).toEqual(['node-a', 'node-b']);
      expect(meta.created_by).toBe('merge');
      expect((db.prepare('SELECT count(*) AS n FROM k8s_objects').get() as { n: number }).n).toBe(6);
      const rules = db.prepare("SELECT ts_ns, json_extract(attrs, '$.node') AS node FROM events WHERE kind = 'endpoint-rule-removed' ORDER BY ts_ns").all() as Array<{ ts_ns: number; node: string }>;
      expect(rules.map((r) => r.node)).toEqual(['node-a', 'node-b']);
      // node-b's rule removal lands at T0+1800 ms on node-a's clock, within the estimate's error
      expect(Math.abs(rules[1]!.ts_ns - (RACE.t0 + 1800e6))).toBeLessThanOrEqual(API_DELAY_B + 1e3);
      const ifaces = (db.prepare('SELECT DISTINCT iface FROM packets ORDER BY iface').all() as Array<{ iface: string }>).map((r) => r.iface);
      expect(ifaces).toEqual(['node-a/cni0', 'node-a/lo']);
      const term = db.prepare("SELECT attrs FROM events WHERE kind = 'pod-terminating'").all() as Array<{ attrs: string }>;
      expect(term).toHaveLength(1);
      expect(JSON.parse(term[0]!.attrs).received_by).toEqual(['node-a', 'node-b']);
    } finally { db.close(); }

    const r = await BundleReader.open(out);
    try {
      const an = await analyzeBundle(r);
      const pod = an.pods.find((p) => p.name === 'web-abc')!;
      expect(pod).toBeDefined();
      expect(Object.keys(pod.ruleRemovedAtByNode ?? {}).sort()).toEqual(['node-a', 'node-b']);
      const tb = nsFromIso(pod.ruleRemovedAtByNode!['node-b']!)!;
      expect(Math.abs(tb - (RACE.t0 + 1800e6))).toBeLessThanOrEqual(API_DELAY_B + 1e3);
      expect(an.bundle.nodes).toEqual(expect.arrayContaining(['node-a', 'node-b']));
      // the slowest node drives the recommendation
      expect(an.recommendation.why).toMatch(/node-b/);
      expect(an.failures.length).toBe(2);
    } finally { r.close(); }
  });

  it('the CLI prints offsets and rejects a single bundle and duplicate nodes with exit 2', () => {
    const cwd = join(import.meta.dirname, '..');
    const out = join(dir, 'cli.rtb');
    const ok = spawnSync('node', ['bin/rolltrace.mjs', 'merge', a, b, '--out', out], { encoding: 'utf8', cwd });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/node-b\s+offset 25[0-3]\.\d{3} ms from 6 shared API event\(s\)/);
    const one = spawnSync('node', ['bin/rolltrace.mjs', 'merge', a, '--out', join(dir, 'x.rtb')], { encoding: 'utf8', cwd });
    expect(one.status).toBe(2);
    const dup = spawnSync('node', ['bin/rolltrace.mjs', 'merge', a, a, '--out', join(dir, 'y.rtb')], { encoding: 'utf8', cwd });
    expect(dup.status).toBe(2);
    expect(dup.stderr).toMatch(/node node-a/);
    expect(readFileSync(out).subarray(0, 15).toString()).toBe('SQLite format 3');
  });

  it('a damaged input is a one-line error (exit 2) naming it, and leaves no partial bundle at --out', () => {
    const cwd = join(import.meta.dirname, '..');
    const bad = damagedFixture(join(dir, 'damaged.rtb'));
    const out = join(dir, 'damaged-merge.rtb');
    const res = spawnSync('node', ['bin/rolltrace.mjs', 'merge', a, bad, '--out', out], { encoding: 'utf8', cwd });
    expect(res.status).toBe(2);
    expect(res.stderr).toMatch(/^rolltrace: .*damaged\.rtb: damaged bundle \(.+\)\n$/);
    expect(res.stderr).not.toMatch(/SqliteError|\n\s+at /);
    for (const suffix of ['', '-wal', '-shm', '-journal']) expect(existsSync(out + suffix)).toBe(false);
  });
});

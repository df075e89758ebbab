/**
 * Issue 12 goal 3: each source's live-since instant is in the bundle (meta.sources_live_ns) and the
 * analysis names a blind spot — a change that may have happened before the source that sees it was
 * live — instead of an unexplained `unknown`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { analyzeBundle } from '../analyzer/analyze.js';
import { blindSpot } from '../analyzer/model/pods.js';
import { ROOT } from './helpers/cli.js';

describe('blindSpot', () => {
  const T = 1_795_000_000_000_000_000;
  it('names the sources and how late they were live when all came after termination began', () => {
    const s = blindSpot({ nftables: T + 3_500_000_000, packets: T - 1e9 }, ['nftables'], T, 'the rule removal');
    expect(s).toMatch(/^blind spot: the rule removal may have happened before nftables was live \(from .*Z, 3500(\.0)? ms after termination began at .*Z\)/);
  });
  it('is silent when one seeing source was live in time, or the bundle does not say', () => {
    expect(blindSpot({ strace: T + 5e9, ebpf: T - 1 }, ['strace', 'ebpf'], T, 'x')).toBeNull();
    expect(blindSpot(null, ['nftables'], T, 'x')).toBeNull();
    expect(blindSpot({ packets: T + 5e9 }, ['nftables'], T, 'x')).toBeNull();
    expect(blindSpot({ nftables: T + 5e9 }, ['nftables'], null, 'x')).toBeNull();
  });
});

describe('analysis of a bundle whose nftables source came up late', () => {
  let dir: string;
  let file: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'rt-blind-'));
    file = join(dir, 'late-nft.rtb');
    copyFileSync(join(ROOT, 'fixtures', 'bundles', 'race-synthetic.rtb'), file);
    const db = new Database(file);
    // the rule removal was not seen: the nftables source went live after the pods' termination began
    const first = (db.prepare("SELECT min(ts_ns) AS t FROM events WHERE kind IN ('signal', 'listener-closed')").get() as { t: number }).t;
    db.exec("DELETE FROM events WHERE kind = 'endpoint-rule-removed'");
    db.prepare("INSERT OR REPLACE INTO meta(key, value) VALUES ('sources_live_ns', ?)").run(JSON.stringify({ strace: first - 2e9, nftables: first + 3_500_000_000 }));
    db.close();
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('the unknown verdict says why: a blind spot of the nftables source', async () => {
    const r = await BundleReader.open(file);
    let a;
    try { a = await analyzeBundle(r); } finally { r.close(); }
    const pods = a.pods.filter((p) => p.verdict === 'unknown' && p.listenerClosedAt !== null);
    expect(pods.length).toBeGreaterThan(0);
    for (const p of pods) {
      expect(p.evidence.some((e) => /^blind spot: the removal of .* endpoint rules may have happened before nftables was live/.test(e))).toBe(true);
      // strace was live before: the listener close is no blind spot
      expect(p.evidence.some((e) => /blind spot: the listener close/.test(e))).toBe(false);
    }
  });

  it('without live-since instants (older bundles) the evidence names no blind spot', async () => {
    const db = new Database(file);
    db.exec("DELETE FROM meta WHERE key = 'sources_live_ns'");
    db.close();
    const r = await BundleReader.open(file);
    let a;
    try { a = await analyzeBundle(r); } finally { r.close(); }
    expect(a.pods.some((p) => p.verdict === 'unknown')).toBe(true);
    expect(a.pods.flatMap((p) => p.evidence).some((e) => e.startsWith('blind spot'))).toBe(false);
  });
});

/**
 * Every report and sharing tool on a real bundle recorded by `rolltrace lab run --scenario race`
 * (real processes, nftables rules, API watches, probe; needs root like the lab itself).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { analyzeBundle } from '../analyzer/analyze.js';
import { renderHtml, HTML_COLOURS } from '../analyzer/render/html.js';
import { renderMarkdown } from '../analyzer/render/markdown.js';
import { exportPcap, exportPerfetto } from '../analyzer/commands/export.js';
import { mergeBundles } from '../analyzer/merge/merge.js';
import type { Analysis } from '../schemas/analysis.js';
import { chromiumRender, countColour } from './reports-helpers.js';

const ROOT = join(import.meta.dirname, '..');
let dir: string;
let bundle: string;
let analysis: Analysis;
const hex = (s: string): [number, number, number] => [parseInt(s.slice(1, 3), 16), parseInt(s.slice(3, 5), 16), parseInt(s.slice(5, 7), 16)];

async function analyze(file: string): Promise<Analysis> {
  const r = await BundleReader.open(file);
  try { return await analyzeBundle(r); } finally { r.close(); }
}
const summary = (a: Analysis) => ({
  pods: a.pods.map((p) => [p.verdict, p.exposureMs, p.failedConnections, p.listenerClosedAt, p.ruleRemovedAt, p.deletionAt]),
  failures: a.failures.map((f) => [f.at, f.cause, f.backend.port]),
  rec: [a.recommendation.preStopSeconds, a.recommendation.terminationGracePeriodSeconds],
});

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'reports-lab-'));
  bundle = join(dir, 'race.rtb');
  const run = spawnSync('node', ['bin/rolltrace.mjs', 'lab', 'run', '--scenario', 'race', '--out', bundle], { cwd: ROOT, encoding: 'utf8', timeout: 150_000 });
  if (run.status !== 0) throw new Error(`lab run failed (${run.status}): ${run.stderr.slice(-2000)}`);
  analysis = await analyze(bundle);
}, 180_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('reports on a lab race bundle', () => {
  it('the race scenario exposes pods and fails connections (precondition)', () => {
    expect(analysis.pods.some((p) => p.verdict === 'listener-closed-before-rule-removed')).toBe(true);
    expect(analysis.failures.length).toBeGreaterThan(0);
  });

  it('html: one mark per failure, shaded exposure, lanes; renders in Chromium', async () => {
    const r = await BundleReader.open(bundle);
    let html: string;
    try { html = await renderHtml(analysis); } finally { r.close(); }
    const shown = analysis.failures.filter((f) => analysis.pods.some((p) => f.backend.pod === `${p.namespace}/${p.name}`)).length;
    expect(html.match(/class="mark fail"/g)?.length ?? 0).toBe(shown);
    expect(html.match(/class="span exposure"/g)?.length).toBe(analysis.pods.filter((p) => p.exposureMs !== null && p.exposureMs > 0).length);
    const file = join(dir, 'race.html');
    writeFileSync(file, html);
    const { dom, png } = chromiumRender(file, join(dir, 'race.png'), { w: 1400, h: 1800 });
    expect(dom).toContain('data-scripted="1"');
    // lanes partly under the exposure shading: their own colour still shows outside it
    for (const c of [HTML_COLOURS.laneApi, HTML_COLOURS.laneRules, HTML_COLOURS.laneProc, HTML_COLOURS.lanePkt]) expect(countColour(png, hex(c), 3)).toBeGreaterThan(3_000);
    expect(countColour(png, hex(HTML_COLOURS.failure), 12)).toBeGreaterThan(shown * 60);
    expect(countColour(png, hex(HTML_COLOURS.exposure), 10)).toBeGreaterThan(100);
  }, 60_000);

  it('markdown: every pod and failure', () => {
    const md = renderMarkdown(analysis);
    for (const p of analysis.pods) expect(md).toContain(p.name);
    expect(md).toContain(`## Failures (${analysis.failures.length})`);
  });

  it('pcapng: tshark reads as many packets as the bundle holds (every captured frame, not only the index rows)', async () => {
    const out = join(dir, 'race.pcapng');
    const r = await BundleReader.open(bundle);
    let n: number;
    try { n = r.frameCount(); await exportPcap(r, out, analysis); } finally { r.close(); }
    const lines = execFileSync('tshark', ['-r', out, '-T', 'fields', '-e', 'frame.number'], { encoding: 'utf8' }).split('\n').filter(Boolean);
    expect(lines).toHaveLength(n);
  });

  it('perfetto: an exposure span per exposed pod, as long as the exposure', async () => {
    const out = join(dir, 'race.json');
    const r = await BundleReader.open(bundle);
    try { await exportPerfetto(r, out, analysis); } finally { r.close(); }
    const t = JSON.parse(readFileSync(out, 'utf8')) as { traceEvents: Array<{ name: string; ph: string; dur?: number }> };
    const spans = t.traceEvents.filter((e) => e.name === 'exposure window' && e.ph === 'X').map((e) => e.dur!).sort((a, b) => a - b);
    const expected = analysis.pods.filter((p) => p.exposureMs && p.exposureMs > 0).map((p) => p.exposureMs! * 1000).sort((a, b) => a - b);
    expect(spans).toHaveLength(expected.length);
    spans.forEach((d, i) => expect(Math.abs(d - expected[i]!)).toBeLessThan(2));
  });

  it('redact --pseudonymize: same analysis, no pod name or pod IP left', async () => {
    const out = join(dir, 'red.rtb');
    const res = spawnSync('node', ['bin/rolltrace.mjs', 'redact', bundle, '--out', out, '--pseudonymize'], { cwd: ROOT, encoding: 'utf8' });
    expect(res.status).toBe(0);
    expect(summary(await analyze(out))).toEqual(summary(analysis));
    const bytes = readFileSync(out);
    for (const p of analysis.pods) {
      expect(bytes.includes(p.name), p.name).toBe(false);
      if (p.ip) expect(bytes.includes(p.ip), p.ip).toBe(false);
    }
    const node = analysis.bundle.node!;
    expect(bytes.includes(`"${node}"`), node).toBe(false);
    const red = new Database(out, { readonly: true });
    try {
      const v = (red.prepare("SELECT value FROM meta WHERE key = 'node'").get() as { value: string }).value;
      expect(v).toMatch(/^node-[0-9a-f]{6,}$/);
    } finally { red.close(); }
  }, 60_000);

  it('merge with a copy recorded on a node whose clock runs 1.5 s ahead recovers the offset exactly', async () => {
    const b = join(dir, 'other-node.rtb');
    copyFileSync(bundle, b);
    const SKEW = 1_500_000_000;
    const db = new Database(b);
    db.transaction(() => {
      for (const [t, c] of [['events', 'ts_ns'], ['packets', 'ts_ns'], ['conntrack', 'ts_ns'], ['k8s_objects', 'ts_ns'], ['nft_snapshots', 'ts_ns'], ['probe_requests', 'start_ns'], ['probe_requests', 'end_ns']]) {
        db.prepare(`UPDATE ${t} SET ${c} = ${c} + ?`).run(SKEW);
      }
      db.prepare("UPDATE meta SET value = 'node-b' WHERE key IN ('node', 'hostname')").run();
    })();
    db.close();
    const out = join(dir, 'merged.rtb');
    const m = await mergeBundles([bundle, b], out);
    // the reference clock is the first node by name (whatever the argument order): the offset between the two is the skew
    expect(m.offsets['node-b']! - m.offsets[analysis.bundle.node!]!).toBe(SKEW);
    const merged = await analyze(out);
    const pod = merged.pods.find((p) => p.verdict === 'listener-closed-before-rule-removed')!;
    const byNode = pod.ruleRemovedAtByNode ?? {};
    expect(Object.keys(byNode).sort()).toEqual([analysis.bundle.node!, 'node-b'].sort());
    expect(byNode['node-b']).toBe(byNode[analysis.bundle.node!]);
  }, 60_000);
});

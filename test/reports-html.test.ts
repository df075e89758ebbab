import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { renderHtml, HTML_COLOURS } from '../analyzer/render/html.js';
import { renderMarkdown } from '../analyzer/render/markdown.js';
import { nsFromIso } from '../schemas/analysis.js';
import { takeExcerpts } from '../analyzer/model/excerpts.js';
import { escapeHtml, escapeMarkdown } from '../analyzer/render/escape.js';
import { chromiumRender, countColour, raceAnalysis, writeRaceBundle } from './reports-helpers.js';

const hex = (s: string): [number, number, number] => [parseInt(s.slice(1, 3), 16), parseInt(s.slice(3, 5), 16), parseInt(s.slice(5, 7), 16)];
const EVIL = '<img src=x onerror=alert(1)>';

let dir: string;
let bundle: string;
let t0: number;
let fails: number[];
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'reports-html-'));
  bundle = join(dir, 'race.rtb');
  const r = writeRaceBundle(bundle, { podName: EVIL });
  t0 = r.t0; fails = r.failuresAtMs;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('escaping', () => {
  it('html escapes markup, quotes and control characters', () => {
    expect(escapeHtml(`${EVIL}"'&\u0007`)).toBe('&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;\ufffd');
  });
  it('markdown escapes pipes, backticks, markup and newlines', () => {
    expect(escapeMarkdown('a|b`c`<b>*x*\nnext\u0001')).toBe('a\\|b\\`c\\`&lt;b&gt;\\*x\\* next');
  });
});

describe('markdown report', () => {
  it('has verdict, pod table, failure list and recommendation, all escaped', async () => {
    const a = raceAnalysis({ podName: `${EVIL}|x`, t0, failuresAtMs: fails });
    const md = renderMarkdown(a);
    expect(md).toMatch(/UNSAFE: 1 of 1 pod\(s\) stopped listening/);
    expect(md).toContain('## Recommendation');
    expect(md).toContain('preStop sleep **2 s**');
    expect(md).toContain('| **exposure** (listener closed → rule removed) | **200.0 ms** |');
    expect(md).toContain('## Failures (2)');
    const failRows = md.split('\n').filter((l) => l.includes('listener-closed') && l.startsWith('| ') && l.includes('10.244.0.100'));
    expect(failRows).toHaveLength(2);
    // every table row keeps the same number of unescaped cell separators
    for (const row of failRows) expect(row.replace(/\\\|/g, '').split('|').length).toBe(9);
    expect(md).not.toContain('<img');
    expect(md).toContain('&lt;img src=x onerror=alert(1)&gt;\\|x');
  });
});

describe('html report in headless chromium', () => {
  it('shows lanes, exposure and failure marks; bundle strings stay text; scripts run', async () => {
    const reader = await BundleReader.open(bundle);
    let html: string;
    try {
      // the traffic marks come from the bundle's excerpts, taken as analyzeBundle takes them
      const a = raceAnalysis({ podName: EVIL, t0, failuresAtMs: fails });
      a.excerpts = takeExcerpts(reader, a, a.bundle.start ? nsFromIso(a.bundle.start) : null);
      html = await renderHtml(a);
    } finally { reader.close(); }
    expect(html).not.toMatch(/<img/i);
    expect(html).not.toMatch(/(src|href)=["']?https?:/i);
    const file = join(dir, 'report.html');
    writeFileSync(file, html);
    const { dom, png } = chromiumRender(file, join(dir, 'report.png'));
    // scripts ran (marker set by the inline script) and the injected markup did not become an element
    expect(dom).toContain('data-scripted="1"');
    // the zoom script laid the timeline out again (it writes the visible range) without throwing
    expect(dom).toMatch(/\d+\.\d ms shown/);
    expect(dom).not.toMatch(/<img/i);
    expect(dom).toContain('&lt;img src=x onerror=alert(1)&gt;');
    // lanes: each lane colour covers a wide band
    for (const c of [HTML_COLOURS.laneApi, HTML_COLOURS.laneRules, HTML_COLOURS.laneProc, HTML_COLOURS.lanePkt]) {
      expect(countColour(png, hex(c), 3)).toBeGreaterThan(20_000);
    }
    // the exposure band is drawn in full colour
    expect(countColour(png, hex(HTML_COLOURS.exposure), 10)).toBeGreaterThan(300);
    // failure diamonds are red and sit inside the packets lane rows
    let minY = Infinity, maxY = -Infinity;
    const lane = hex(HTML_COLOURS.lanePkt);
    for (let y = 0; y < png.height; y++) {
      if (countColour(png, lane, 3, { x0: 0, y0: y, x1: png.width, y1: y + 1 }) > 500) { minY = Math.min(minY, y); maxY = Math.max(maxY, y); }
    }
    expect(maxY).toBeGreaterThan(minY);
    const red = hex(HTML_COLOURS.failure);
    const redInLane = countColour(png, red, 12, { x0: 0, y0: minY, x1: png.width, y1: maxY + 1 });
    expect(redInLane).toBeGreaterThan(2 * 60);
    // process marks (SIGTERM, listener closed, exit) in orange
    expect(countColour(png, hex(HTML_COLOURS.proc), 12)).toBeGreaterThan(3 * 40);
  }, 90_000);

  it('a safe rollout has no failure marks and no exposure (the pixel checks can fail)', async () => {
    const a = raceAnalysis({ t0, failuresAtMs: [] });
    a.pods[0]!.verdict = 'safe';
    a.pods[0]!.ruleRemovedAt = a.pods[0]!.deletionAt; // rule removed before the listener closed
    a.pods[0]!.exposureMs = 0;
    const html = await renderHtml(a);
    const file = join(dir, 'safe.html');
    writeFileSync(file, html);
    const { dom, png } = chromiumRender(file, join(dir, 'safe.png'));
    expect(dom).toContain('SAFE: all 1 terminated pod(s)');
    expect(countColour(png, hex(HTML_COLOURS.failure), 12)).toBe(0);
    expect(countColour(png, hex(HTML_COLOURS.exposure), 10)).toBe(0);
    expect(countColour(png, hex(HTML_COLOURS.lanePkt), 3)).toBeGreaterThan(20_000);
  }, 90_000);
});

describe('html report of the shared race fixture through analyzeBundle', () => {
  it('has one failure mark per failure the analysis found and shaded exposure', async () => {
    const { screenshotBundle } = await import('./reports-helpers.js');
    const fixture = join(import.meta.dirname, '..', 'fixtures', 'bundles', 'race-synthetic.rtb');
    const { html, png, dom } = await screenshotBundle(fixture, join(dir, 'fixture.png'));
    const { BundleReader: R } = await import('../analyzer/bundle-reader.js');
    const { analyzeBundle } = await import('../analyzer/analyze.js');
    const r = await R.open(fixture);
    let nFail: number;
    try { nFail = (await analyzeBundle(r)).failures.length; } finally { r.close(); }
    expect(nFail).toBeGreaterThan(0);
    expect(html.match(/class="mark fail"/g)?.length).toBe(nFail);
    expect(dom).toContain('data-scripted="1"');
    expect(countColour(png, hex(HTML_COLOURS.failure), 12)).toBeGreaterThan(nFail * 60);
    expect(countColour(png, hex(HTML_COLOURS.exposure), 10)).toBeGreaterThan(300);
  }, 90_000);
});

/**
 * Expected analyses as data, the way Perfetto keeps its diff tests: every bundle in fixtures/analysis
 * (lab recordings gzipped as *.rtb.gz, synthetic ones as *.rtb) and fixtures/bundles has its expected
 * `analyze --format json` next to it in fixtures/analysis/<name>.expected.json. The test analyzes each
 * bundle and diffs the JSON. `UPDATE_GOLDEN=1 npx vitest run test/analysis-golden.test.ts` rewrites
 * the expected files after an intended change (never taken by default: review the diff).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import Ajv2020 from 'ajv/dist/2020.js';
import { afterAll, describe, expect, it } from 'vitest';
import { analyzeBundle, hasFailures } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import type { Analysis } from '../schemas/analysis.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const DIR = join(ROOT, 'fixtures/analysis');
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const schema = JSON.parse(readFileSync(join(ROOT, 'schemas/analysis.schema.json'), 'utf8'));
const ajv = new (Ajv2020 as unknown as typeof Ajv2020.default)({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const tmp = mkdtempSync(join(tmpdir(), 'golden-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Case { name: string; path: () => string }
const cases: Case[] = [];
for (const f of readdirSync(DIR).sort()) {
  if (f.endsWith('.rtb.gz')) {
    const name = f.slice(0, -'.rtb.gz'.length);
    // the bundle is analyzed under its own name: the verify commands name the file
    cases.push({ name, path: () => { const p = join(tmp, `${name}.rtb`); writeFileSync(p, gunzipSync(readFileSync(join(DIR, f)))); return p; } });
  } else if (f.endsWith('.rtb')) cases.push({ name: f.slice(0, -4), path: () => join(DIR, f) });
}
for (const f of readdirSync(join(ROOT, 'fixtures/bundles')).sort()) if (f.endsWith('.rtb')) cases.push({ name: f.slice(0, -4), path: () => join(ROOT, 'fixtures/bundles', f) });

async function analysisOf(path: string): Promise<Analysis> {
  const r = await BundleReader.open(path);
  try { return JSON.parse(JSON.stringify(await analyzeBundle(r))) as Analysis; } finally { r.close(); }
}

describe('expected analyses of the scenario fixtures', () => {
  it('has fixtures, and an expected file for each (no stale expected file)', () => {
    expect(cases.length).toBeGreaterThanOrEqual(10);
    const expected = readdirSync(DIR).filter((f) => f.endsWith('.expected.json')).map((f) => f.slice(0, -'.expected.json'.length)).sort();
    if (!UPDATE) expect(expected).toEqual(cases.map((c) => c.name).sort());
  });

  for (const c of cases) {
    it(`${c.name}: analyze --format json equals ${c.name}.expected.json`, async () => {
      const a = await analysisOf(c.path());
      expect(validate(a), ajv.errorsText(validate.errors)).toBe(true);
      const file = join(DIR, `${c.name}.expected.json`);
      const text = JSON.stringify(a, null, 2) + '\n';
      if (UPDATE) writeFileSync(file, text);
      expect(existsSync(file), `${file} missing: run with UPDATE_GOLDEN=1 and review it`).toBe(true);
      expect(a).toEqual(JSON.parse(readFileSync(file, 'utf8')));
    });
  }

  it('every lab scenario carries current values, checks and verify commands; a patch wherever the rollout failed', async () => {
    const lab = cases.filter((c) => c.name.startsWith('lab-'));
    expect(lab.map((c) => c.name).sort()).toEqual(['lab-grace-too-short', 'lab-iptables', 'lab-local-blackhole', 'lab-not-ready', 'lab-prestop', 'lab-race']);
    for (const c of lab) {
      const a = JSON.parse(readFileSync(join(DIR, `${c.name}.expected.json`), 'utf8')) as Analysis;
      const r = a.recommendation;
      expect(r.current?.deployment, c.name).toBe('default/web');
      expect(r.current?.serverVersion, c.name).toMatch(/^v1\.\d+/);
      expect(r.checks?.map((k) => k.knob), c.name).toEqual(['preStop', 'grace', 'pdb', 'strategy', 'probes', 'trafficPolicy']);
      expect(r.verify?.[0], c.name).toMatch(new RegExp(`^rolltrace record --out ${c.name}-fixed\\.rtb .*--deployment web --restart .*--until-rollout-complete`));
      expect(r.verify?.[1], c.name).toBe(`rolltrace analyze ${c.name}-fixed.rtb`);
      if (hasFailures(a)) {
        expect(r.kubectl, c.name).toMatch(/^kubectl patch deployment web -n default --type strategic -p '\{"spec":/);
        expect(JSON.parse(/-p '(.*)'$/.exec(r.kubectl!)![1]!), c.name).toEqual(r.patch);
      }
    }
  });
});

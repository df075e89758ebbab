// House rule: analyzer/ and schemas/ never import recorder/, lab/ or cap (an analyzer-only install must
// work without root, libpcap or the lab). Checks static and dynamic imports of every source file.
import { readdirSync, readFileSync, statSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(__dirname, '..');

function files(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (/\.(ts|mts|js|mjs)$/.test(e)) out.push(p);
  }
  return out;
}

const IMPORT_RE = /(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|import\s*\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)|import\s+['"]([^'"]+)['"]/g;

export function forbiddenImports(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const bad: string[] = [];
  for (const m of src.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2] ?? m[3] ?? m[4];
    if (!spec) continue;
    if (spec === 'cap' || spec.startsWith('cap/')) { bad.push(spec); continue; }
    if (spec.startsWith('.')) {
      const target = relative(ROOT, resolve(dirname(file), spec));
      if (/^(recorder|lab)(\/|$)/.test(target)) bad.push(spec);
    }
  }
  return bad;
}

describe('module boundaries', () => {
  const scanned = [...files(join(ROOT, 'analyzer')), ...files(join(ROOT, 'schemas'))];
  it('scans the analyzer and schemas sources', () => {
    expect(scanned.length).toBeGreaterThan(3);
  });
  for (const f of scanned) {
    it(`${relative(ROOT, f)} imports nothing from recorder/, lab/ or cap`, () => {
      expect(forbiddenImports(f)).toEqual([]);
    });
  }
  it('the checker itself catches a forbidden import (static, dynamic and cap)', () => {
    const d = mkdtempSync(join(ROOT, 'analyzer', '.tmp-boundary-'));
    try {
      const f = join(d, 'x.ts');
      writeFileSync(f, "import { BundleWriter } from '../../recorder/bundle-writer.js';\nconst c = await import('cap');\nconst l = await import('../../lab/cli.js');\n");
      expect(forbiddenImports(f)).toEqual(['../../recorder/bundle-writer.js', 'cap', '../../lab/cli.js']);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
void tmpdir;

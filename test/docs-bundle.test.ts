import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { parseSchemaDocs, renderBundleDocs } from '../schemas/docgen.js';
import { loadMigrations } from '../schemas/db.js';

describe('docs/bundle.md', () => {
  it('is what the migrations\' comments generate (run `npm run docs:bundle`)', () => {
    expect(readFileSync(join(__dirname, '..', 'docs', 'bundle.md'), 'utf8')).toBe(renderBundleDocs());
  });
  it('documents every column of every table and view', () => {
    const db = new Database(':memory:');
    for (const m of loadMigrations()) db.exec(m.sql);
    const docs = parseSchemaDocs();
    const objects = db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table','view') AND name NOT LIKE 'sqlite_%'").all() as { name: string }[];
    for (const { name } of objects) {
      const d = docs.find((x) => x.name === name);
      expect(d, `no doc for ${name}`).toBeDefined();
      const cols = (db.prepare(`PRAGMA table_info(${name})`).all() as { name: string }[]).map((c) => c.name);
      const documented = new Set(d!.columns.map((c) => c.name));
      for (const c of cols) expect(documented.has(c), `${name}.${c} undocumented`).toBe(true);
    }
  });
});

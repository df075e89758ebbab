/**
 * docs/bundle.md is generated from the comments in schemas/migrations/*.sql: `-- table NAME: text` or
 * `-- view NAME: text` introduces a table/view, `-- col: text` (or `-- a, b: text`) after a column
 * documents it; `ALTER TABLE t ADD COLUMN c ... -- c: text` documents c in t's section. `npm run docs:bundle` rewrites the file; test/docs-bundle.test.ts checks they agree.
 */
import { loadMigrations, SCHEMA_VERSION } from './db.js';

interface Doc { kind: 'table' | 'view'; name: string; text: string; columns: Array<{ name: string; text: string }>; migration: string }

export function parseSchemaDocs(): Doc[] {
  const docs: Doc[] = [];
  for (const m of loadMigrations()) {
    let cur: Doc | null = null;
    for (const line of m.sql.split('\n')) {
      const head = /^--\s*(table|view)\s+([a-z_0-9]+):\s*(.+)$/.exec(line.trim());
      if (head) {
        cur = { kind: head[1] as 'table' | 'view', name: head[2]!, text: head[3]!.trim(), columns: [], migration: m.name };
        docs.push(cur);
        continue;
      }
      // a column added later documents itself on its table's section
      const alter = /^ALTER\s+TABLE\s+([a-z_0-9]+)\s+ADD\s+COLUMN\s+([a-z_0-9]+)\b.*--\s*[a-z_0-9]+:\s*(.+)$/i.exec(line.trim());
      if (alter) {
        const t = docs.find((d) => d.name === alter[1]);
        if (t) t.columns.push({ name: alter[2]!, text: `${alter[3]!.trim()} _(${m.name})_` });
        continue;
      }
      if (!cur) continue;
      const c = /--\s*([a-z_0-9]+(?:\s*,\s*[a-z_0-9]+)*):\s*(.+)$/.exec(line);
      if (c && !line.trim().startsWith('--')) {
        for (const name of c[1]!.split(',').map((s) => s.trim())) cur.columns.push({ name, text: c[2]!.trim() });
      }
    }
  }
  return docs;
}

export function renderBundleDocs(): string {
  const docs = parseSchemaDocs();
  const out: string[] = [
    '# The bundle (`*.rtb`)',
    '',
    '<!-- generated from schemas/migrations/*.sql by `npm run docs:bundle`; do not edit by hand -->',
    '',
    `A bundle is one SQLite file (schema version ${SCHEMA_VERSION}, also in \`PRAGMA user_version\` and`,
    '`meta.schema_version`). It is written in WAL mode while recording and switched back to a single',
    'file when the recorder stops cleanly (`meta.closed_cleanly = 1`). A bundle whose recorder was killed',
    'still opens; `rolltrace verify` reports the crashed close. Every `*_ns` column is Unix-epoch',
    'nanoseconds on the recording node\'s realtime clock. Open it with `sqlite3 x.rtb` or Datasette;',
    '`rolltrace analyze` also reads `x.rtb.gz`.',
    '',
    'The `events.attrs` JSON of each event kind is typed in `schemas/events.ts`; the per-source clocks are',
    'in `sources.clock` (kernel, converted-monotonic, receipt, polled, file).',
    '',
    '**The packet index of a recorded bundle.** `rolltrace record` stores every frame in `packet_chunks`',
    'and nothing else per frame: the `packets` index (SYN/RST, first payload per direction, early FINs,',
    'ICMP errors) is left to the bundle\'s readers, off the node (`meta.packets_index = deferred`).',
    'rolltrace\'s own commands build it when they open the bundle (about as long as `import` takes for',
    'the same frames) without writing the file; for plain SQL on `packets` and the views that read it',
    '(`timeline`, `tcp_resets`), `rolltrace index x.rtb` writes it into the file once. Imported, merged',
    'and redacted bundles carry their index.',
    '',
  ];
  for (const d of docs) {
    out.push(`## ${d.kind} \`${d.name}\``, '', `${d.text} _(${d.migration})_`, '', '| column | meaning |', '| --- | --- |');
    for (const c of d.columns) out.push(`| \`${c.name}\` | ${c.text.replace(/\|/g, '\\|')} |`);
    out.push('');
  }
  return out.join('\n');
}

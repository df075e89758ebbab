/** `rolltrace verify FILE`: integrity, schema version, per-source counts, time range, clean or crashed close. */
import { InputError } from '../../schemas/errors.js';
import { isoFromNs } from '../../schemas/analysis.js';
import { SCHEMA_VERSION } from '../../schemas/db.js';
import { BundleReader, CORE_TABLES } from '../bundle-reader.js';

export interface VerifyResult {
  file: string;
  valid: boolean;
  reason: string | null;
  schemaVersion: number;
  integrity: string;
  closedCleanly: boolean;
  createdBy: string | null;
  start: string | null;
  end: string | null;
  tables: Record<string, number>;
  sources: Array<{ name: string; status: string; clock: string; events: number; dropped: number; detail: string | null }>;
}

export async function verifyBundle(file: string): Promise<VerifyResult> {
  const r = await BundleReader.open(file);
  try {
    let integrity: string;
    try {
      const rows = r.db.pragma('integrity_check(20)') as Array<{ integrity_check: string }>;
      integrity = rows.map((x) => x.integrity_check).join('; ');
    } catch (e) {
      throw new InputError(`${file}: damaged SQLite file (${(e as Error).message})`);
    }
    const missing = r.missing();
    const tables: Record<string, number> = {};
    for (const t of CORE_TABLES) tables[t] = r.count(t);
    const range = r.timeRange();
    const res: VerifyResult = {
      file,
      valid: integrity === 'ok' && missing.length === 0,
      reason: integrity !== 'ok' ? `integrity check failed: ${integrity}` : missing.length ? `missing tables: ${missing.join(', ')}` : null,
      schemaVersion: r.schemaVersion,
      integrity,
      closedCleanly: r.closedCleanly,
      createdBy: r.metaValue('created_by') ?? null,
      start: isoFromNs(r.metaNumber('started_ns') ?? range?.start),
      end: isoFromNs(r.metaNumber('ended_ns') ?? range?.end),
      tables,
      sources: r.sources().map((s) => ({ name: s.name, status: s.status, clock: s.clock, events: s.events, dropped: s.dropped, detail: s.detail })),
    };
    return res;
  } finally {
    r.close();
  }
}

export async function runVerify(file: string, opts: { json?: boolean }): Promise<number> {
  const v = await verifyBundle(file);
  if (opts.json) {
    process.stdout.write(JSON.stringify(v, null, 2) + '\n');
  } else {
    const lines = [
      `${v.valid ? 'valid' : 'INVALID'}: ${file}${v.reason ? ` (${v.reason})` : ''}`,
      `schema:   v${v.schemaVersion} (this rolltrace: v${SCHEMA_VERSION}), created by ${v.createdBy ?? 'unknown'}`,
      `close:    ${v.closedCleanly ? 'clean' : 'crashed (recorder did not finalize; data up to the last flush is kept)'}`,
      `range:    ${v.start ?? '-'} .. ${v.end ?? '-'}`,
      `rows:     ${Object.entries(v.tables).map(([k, n]) => `${k}=${n}`).join(' ')}`,
      'sources:',
      ...v.sources.map((s) => `  ${s.name.padEnd(14)} ${s.status.padEnd(12)} events=${s.events} dropped=${s.dropped} clock=${s.clock}${s.detail ? `  ${s.detail}` : ''}`),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  if (!v.valid) {
    process.stderr.write(`rolltrace: ${file}: ${v.reason}\n`);
    return 2;
  }
  return 0;
}

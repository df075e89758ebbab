/** `rolltrace verify FILE`: integrity, schema version, per-source counts, time range, clean or crashed close. */
import { InputError } from '../../schemas/errors.js';
import { isoFromNs } from '../../schemas/analysis.js';
import { SCHEMA_VERSION } from '../../schemas/db.js';
import { asInputError } from '../analyze.js';
import { BundleReader, CORE_TABLES } from '../bundle-reader.js';
import { clean, sane } from '../util.js';

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
  /** row count per core table; -1 when the table could not be read (see `problems`) */
  tables: Record<string, number>;
  sources: Array<{ name: string; status: string; clock: string; events: number; dropped: number; detail: string | null }>;
  /** what could not be read (a damaged page, an impossible value), one short line each */
  problems: string[];
}

const count = (v: unknown): number => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : 0);

export async function verifyBundle(file: string): Promise<VerifyResult> {
  const r = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  try {
    let integrity: string;
    try {
      const rows = r.db.pragma('integrity_check(20)') as Array<{ integrity_check: string }>;
      // one row may hold several messages separated by newlines
      integrity = rows.flatMap((x) => String(x.integrity_check).split(/\r?\n/)).filter(Boolean).join('; ');
    } catch (e) {
      throw new InputError(`${file}: damaged SQLite file (${clean((e as Error).message, 200)})`);
    }
    const problems: string[] = [];
    // every read below may hit a damaged page or an impossible value: it becomes a problem, never a crash
    const tryRead = <T>(what: string, fallback: T, fn: () => T): T => {
      try { return fn(); } catch (e) {
        if (e instanceof InputError) throw e;
        problems.push(`${what}: ${clean((e as Error)?.message ?? String(e), 160)}`);
        return fallback;
      }
    };
    const missing = r.missing();
    const tables: Record<string, number> = {};
    for (const t of CORE_TABLES) tables[t] = tryRead(`count of ${t}`, -1, () => r.count(t));
    const range = tryRead('time range', null, () => r.timeRange());
    const meta = (k: string) => tryRead('meta', undefined, () => r.metaValue(k));
    const metaNs = (k: string) => tryRead('meta', undefined, () => r.metaNumber(k));
    const sources = tryRead('sources', [], () => r.sources()).map((s) => ({
      name: clean(s.name, 80), status: clean(s.status, 40), clock: clean(s.clock, 40),
      events: count(s.events), dropped: count(s.dropped), detail: s.detail === null || s.detail === undefined ? null : clean(s.detail, 300),
    }));
    const reason = integrity !== 'ok' ? `integrity check failed: ${integrity}`
      : missing.length ? `missing tables: ${missing.join(', ')}`
        : problems.length ? `unreadable: ${problems.join('; ')}` : null;
    const res: VerifyResult = {
      file,
      valid: reason === null,
      reason: reason === null ? null : clean(reason, 400),
      schemaVersion: r.schemaVersion,
      integrity,
      closedCleanly: tryRead('meta', false, () => r.closedCleanly),
      createdBy: meta('created_by') ?? null,
      start: isoFromNs(sane(metaNs('started_ns')) ?? sane(range?.start) ?? undefined),
      end: isoFromNs(sane(metaNs('ended_ns')) ?? sane(range?.end) ?? undefined),
      tables,
      sources,
      problems,
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
      `${v.valid ? 'valid' : 'INVALID'}: ${clean(file, 200)}${v.reason ? ` (${v.reason})` : ''}`,
      `schema:   v${v.schemaVersion} (this rolltrace: v${SCHEMA_VERSION}), created by ${v.createdBy === null ? 'unknown' : clean(v.createdBy, 80)}`,
      `close:    ${v.closedCleanly ? 'clean' : 'crashed (recorder did not finalize; data up to the last flush is kept)'}`,
      `range:    ${v.start ?? '-'} .. ${v.end ?? '-'}`,
      `rows:     ${Object.entries(v.tables).map(([k, n]) => `${k}=${n}`).join(' ')}`,
      'sources:',
      ...v.sources.map((s) => `  ${s.name.padEnd(14)} ${s.status.padEnd(12)} events=${s.events} dropped=${s.dropped} clock=${s.clock}${s.detail ? `  ${s.detail}` : ''}`),
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  if (!v.valid) {
    process.stderr.write(`rolltrace: ${clean(file, 200)}: ${v.reason}\n`);
    return 2;
  }
  return 0;
}

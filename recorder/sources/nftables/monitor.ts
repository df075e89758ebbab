/**
 * Pure parsing of `nft -j monitor` lines and of a burst of them. One line is one JSON object such as
 * {"add": {"rule": {"family": "ip", "table": "kube-proxy", "chain": "...", "handle": 59, "expr": [...]}}}
 * or {"delete": {"chain": {"family": "ip", "table": "kube-proxy", "name": "...", "handle": 34}}}.
 * nft prints no timestamps and reports a deleted rule only by handle: the source stamps each line on receipt.
 */
import type { NftChangeAttrs, RulesChangedAttrs } from '../../../schemas/events.js';

export type MonitorRecord = NftChangeAttrs;

export type MonitorLine =
  /** doc: the parsed JSON line, for callers that replay it (import) */
  | { t: 'record'; r: MonitorRecord; doc: Record<string, unknown> }
  /** blank line or a known diagnostic nft prints around a flush (not data, not counted as lost) */
  | { t: 'noise' }
  | { t: 'malformed'; reason: string };

const NOISE = [/^rule without statements\?!$/, /^# /];

export function parseMonitorLine(line: string): MonitorLine {
  const s = line.trim();
  if (s === '' || NOISE.some((re) => re.test(s))) return { t: 'noise' };
  if (!s.startsWith('{')) return { t: 'malformed', reason: 'not JSON' };
  let doc: unknown;
  try { doc = JSON.parse(s); } catch { return { t: 'malformed', reason: 'truncated or invalid JSON' }; }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return { t: 'malformed', reason: 'not an object' };
  const ops = Object.keys(doc);
  if (ops.length !== 1) return { t: 'malformed', reason: 'expected one operation' };
  const op = ops[0]!;
  if (!['add', 'delete', 'flush', 'replace', 'insert', 'update', 'create', 'reset', 'destroy', 'rename'].includes(op)) {
    return { t: 'malformed', reason: `unknown operation ${op}` };
  }
  const body = (doc as Record<string, unknown>)[op];
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { t: 'malformed', reason: 'operation without object' };
  const objs = Object.keys(body);
  const object = objs[0];
  if (!object) return { t: 'malformed', reason: 'operation without object' };
  const o = (body as Record<string, unknown>)[object] as Record<string, unknown> | null;
  const r: MonitorRecord = { op, object };
  if (o && typeof o === 'object') {
    if (typeof o.family === 'string') r.family = o.family;
    // for a table the name is the table; for chains/sets/maps "table" is given separately
    if (typeof o.table === 'string') r.table = o.table;
    else if (object === 'table' && typeof o.name === 'string') r.table = o.name;
    if (typeof o.chain === 'string') r.chain = o.chain;
    else if (object === 'chain' && typeof o.name === 'string') r.chain = o.name;
    if (typeof o.handle === 'number') r.handle = o.handle;
  }
  return { t: 'record', r, doc: doc as Record<string, unknown> };
}

export interface ParsedMonitor {
  records: MonitorRecord[];
  malformed: number;
  noise: number;
}

/** Parse a whole captured monitor stream (fixtures, `import --nft-monitor`). */
export function parseMonitorText(text: string): ParsedMonitor {
  const out: ParsedMonitor = { records: [], malformed: 0, noise: 0 };
  for (const line of text.split('\n')) {
    const p = parseMonitorLine(line);
    if (p.t === 'record') out.records.push(p.r);
    else if (p.t === 'noise') { if (line.trim() !== '') out.noise++; } else out.malformed++;
  }
  return out;
}

/** The `rules-changed` attrs of one burst: counts per "op object" and the tables it touched. */
export function summarizeBurst(records: MonitorRecord[]): RulesChangedAttrs {
  const ops: Record<string, number> = {};
  const tables = new Set<string>();
  for (const r of records) {
    const k = `${r.op} ${r.object}`;
    ops[k] = (ops[k] ?? 0) + 1;
    if (r.table) tables.add(r.family ? `${r.family} ${r.table}` : r.table);
  }
  return { lines: records.length, ops, tables: [...tables].sort() };
}

/** True when a table name belongs to kube-proxy (nftables mode) or to iptables-nft (iptables mode). */
export function isKubeRelevantTable(table: string | undefined): boolean {
  if (!table) return true;
  return table === 'kube-proxy' || table === 'nat' || table === 'filter' || table === 'mangle';
}

export type StampedRecord = MonitorRecord & { ts: number };

/**
 * The receipt time of the monitor line that made an endpoint's rules appear or go, when a burst holds
 * several transactions (kube-proxy syncs back to back: the burst's first line belongs to the earlier one).
 * An endpoint's chain (nftables `endpoint-…__ip/port`, iptables-nft `KUBE-SEP-…`) is rewritten by every sync
 * of its service, so: removed = the first delete on that chain after its last add; added = its first add.
 * The stamp is that of the first line of the sync that made it (see below how lines are grouped).
 * null when the burst never names the chain (then the burst's first line stands).
 */
export function changeStamp(records: StampedRecord[], chain: string, change: 'added' | 'removed', gapNs = 2e6): number | null {
  let at = -1;
  if (change === 'added') at = records.findIndex((r) => r.chain === chain && r.op === 'add');
  else {
    let lastAdd = -1;
    records.forEach((r, i) => { if (r.chain === chain && r.op === 'add') lastAdd = i; });
    for (let i = lastAdd + 1; i < records.length && at < 0; i++) {
      const r = records[i]!;
      if (r.chain === chain && (r.op === 'delete' || r.op === 'flush')) at = i;
    }
  }
  if (at < 0) return null;
  // transactions: runs of lines with gaps under gapNs. One sync commits each table at most once
  // (iptables-restore: filter, then nat, tens of ms apart on a loaded node), so a transaction on a table
  // the current sync has not touched yet belongs to that sync; one on a table it touched starts the next.
  let syncStart = 0;
  let tables = new Set<string>();
  let groupStart = 0;
  let groupTables = new Set<string>();
  const closeGroup = () => {
    if ([...groupTables].some((t) => tables.has(t))) { syncStart = groupStart; tables = new Set(); }
    for (const t of groupTables) tables.add(t);
  };
  for (let i = 0; i <= at; i++) {
    if (i > 0 && records[i]!.ts - records[i - 1]!.ts >= gapNs) { closeGroup(); groupStart = i; groupTables = new Set(); }
    groupTables.add(`${records[i]!.family ?? ''} ${records[i]!.table ?? ''}`);
  }
  closeGroup();
  return records[syncStart]!.ts;
}

/**
 * Pure parsing of `nft -j monitor` lines and of a burst of them. One line is one JSON object such as
 * {"add": {"rule": {"family": "ip", "table": "kube-proxy", "chain": "...", "handle": 59, "expr": [...]}}}
 * or {"delete": {"chain": {"family": "ip", "table": "kube-proxy", "name": "...", "handle": 34}}}.
 * nft prints no timestamps and reports a deleted rule only by handle: the source stamps each line on receipt.
 */
import { parseJsonBounded } from '../../../schemas/json.js';
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
  const pj = parseJsonBounded(s);
  if (!pj.ok) return { t: 'malformed', reason: pj.why === 'too-deep' ? 'JSON nested too deep' : 'truncated or invalid JSON' };
  doc = pj.v as typeof doc;
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

/**
 * What an added rule matches and does, as far as a no-endpoint rule needs: the destination address and
 * port it matches (iptables-nft writes `-d` and `--dport` as native expressions) and its verdict —
 * REJECT (an opaque `xt` target through iptables-nft, `reject` natively) or DROP.
 */
export interface RuleFacts { daddr?: string; dport?: number; verdict?: 'reject' | 'drop' }
export type StampedRecord = MonitorRecord & { ts: number; rule?: RuleFacts };

/** RuleFacts of an `add`/`insert rule` monitor line (its parsed JSON), undefined for anything else or no verdict */
export function ruleFacts(doc: Record<string, unknown>): RuleFacts | undefined {
  const body = (doc.add ?? doc.insert) as { rule?: { expr?: unknown } } | undefined;
  const expr = body?.rule?.expr;
  if (!Array.isArray(expr)) return undefined;
  const f: RuleFacts = {};
  for (const e of expr as Array<Record<string, unknown>>) {
    if (!e || typeof e !== 'object') continue;
    const m = e.match as { op?: string; left?: { payload?: { protocol?: string; field?: string } }; right?: unknown } | undefined;
    if (m && (m.op === '==' || m.op === undefined) && m.left?.payload) {
      const { protocol, field } = m.left.payload;
      if (field === 'daddr' && (protocol === 'ip' || protocol === 'ip6') && typeof m.right === 'string') f.daddr = m.right;
      if (field === 'dport' && (protocol === 'tcp' || protocol === 'udp' || protocol === 'sctp') && typeof m.right === 'number') f.dport = m.right;
    }
    const xt = e.xt as { type?: string; name?: string } | undefined;
    if (xt?.type === 'target' && (xt.name === 'REJECT' || xt.name === 'DROP')) f.verdict = xt.name === 'REJECT' ? 'reject' : 'drop';
    if ('reject' in e) f.verdict = 'reject';
    if ('drop' in e) f.verdict = 'drop';
  }
  return f.verdict ? f : undefined;
}

/**
 * The receipt time of the first line of `records` that added a no-endpoint rule like `t` (iptables-nft:
 * `-d VIP --dport PORT -j REJECT` in KUBE-SERVICES, `--dport NODEPORT -j REJECT|DROP` with no address in
 * KUBE-EXTERNAL-SERVICES), null when none did. A ruleset diff that waited for a later burst (a line came in
 * while the burst's snapshot ran) would otherwise stamp the rule with that later burst: the line that added
 * it says when it was committed.
 */
export function noEndpointStamp(records: StampedRecord[], t: { vip: string | null; node_port: number | null; action: 'reject' | 'drop' }): number | null {
  let host: string | null = null, port: number | null = null;
  if (t.vip) {
    const i = t.vip.lastIndexOf(':');
    host = t.vip.slice(0, i).replace(/^\[|\]$/g, '');
    port = Number(t.vip.slice(i + 1));
  } else if (t.node_port !== null) port = t.node_port;
  else return null;
  for (const r of records) {
    if (r.object !== 'rule' || (r.op !== 'add' && r.op !== 'insert') || !r.rule || r.rule.verdict !== t.action || r.rule.dport !== port) continue;
    if (host !== null ? r.rule.daddr === host : r.rule.daddr === undefined) return r.ts;
  }
  return null;
}

/**
 * When one burst holds several kube-proxy syncs back to back, the burst's first line belongs to the
 * earlier one: the receipt time of the monitor line that removed an endpoint. An endpoint's chain
 * (nftables `endpoint-…__ip/port`, iptables-nft `KUBE-SEP-…`) is rewritten (flushed, then its rules added
 * again) by every sync of its service, and only flushed or deleted by the sync that drops it. So: if the
 * burst re-added the chain's rules before flushing it for good, an earlier sync in this burst kept the
 * endpoint, and the removal is stamped with the run of lines (gaps under gapNs) holding that last flush,
 * never before the lines that re-added it. Otherwise (one sync, possibly read in several chunks on a busy
 * machine) null: the burst's first line stands. Additions keep the burst's first line too.
 */
export function changeStamp(records: StampedRecord[], chain: string, gapNs = 2e6): number | null {
  let lastAdd = -1;
  records.forEach((r, i) => { if (r.chain === chain && r.op === 'add') lastAdd = i; });
  if (lastAdd < 0) return iptablesNatStamp(records, chain, gapNs);
  let at = -1;
  for (let i = lastAdd + 1; i < records.length && at < 0; i++) {
    const r = records[i]!;
    if (r.chain === chain && (r.op === 'delete' || r.op === 'flush')) at = i;
  }
  if (at < 0) return null;
  while (at > lastAdd + 1 && records[at]!.ts - records[at - 1]!.ts < gapNs) at--;
  return records[at]!.ts;
}

/**
 * iptables-nft: one kube-proxy sync commits the filter table, then the nat table, tens of ms apart, and
 * only the nat commit changes where a service routes (KUBE-SVC → KUBE-SEP). When a burst holds another
 * sync's commits before the one that deletes an endpoint's KUBE-SEP chain (a no-change sync rewrites its
 * filter and nat rules too), the burst's first line is that earlier sync: the removal is stamped with the
 * run of nat lines (gaps under gapNs) holding the chain's first delete or flush. null when the chain is
 * not an iptables nat chain of this burst, or when that run starts the burst (its first line stands).
 */
function iptablesNatStamp(records: StampedRecord[], chain: string, gapNs: number): number | null {
  let at = records.findIndex((r) => r.chain === chain && r.table === 'nat' && (r.op === 'delete' || r.op === 'flush'));
  if (at < 0) return null;
  while (at > 0 && records[at - 1]!.table === 'nat' && records[at]!.ts - records[at - 1]!.ts < gapNs) at--;
  return at === 0 ? null : records[at]!.ts;
}

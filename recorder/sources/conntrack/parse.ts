/**
 * Pure parser for `conntrack -E -o timestamp,extended[,id]` lines, e.g.
 *   [1795292068.851527]\t    [NEW] ipv4     2 tcp      6 120 SYN_SENT src=10.244.0.5 dst=10.96.0.20 sport=34840
 *   dport=80 [UNREPLIED] src=10.244.0.6 dst=10.244.0.5 sport=8081 dport=34840 id=3831349171
 * The first src/dst/sport/dport are the original direction (client -> service VIP), the second the
 * reply direction (backend after DNAT -> client). The bracketed time is taken by conntrack when it reads
 * the netlink event (gettimeofday, microseconds).
 */
import type { ConntrackRow } from '../../../schemas/rows.js';

export type ConntrackLine =
  | { t: 'row'; row: ConntrackRow }
  /** blank line or conntrack's own summary ("N flow events have been shown.") */
  | { t: 'noise' }
  | { t: 'malformed'; reason: string };

const HEAD = /^\[\s*(\d+)\.(\d+)\s*\]\s+\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/;
const HEAD_NO_TS = /^\s*\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/;
const NOISE = /^conntrack v[\d.]+ \(conntrack-tools\): \d+ flow events? (?:has|have) been shown\.$/;
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;
const IPV6 = /^[0-9a-fA-F:]+(:\d{1,3}(\.\d{1,3}){3})?$/;

/**
 * Parse one line. `receiptNs` stamps lines printed without `-o timestamp` (the source passes the
 * receipt time; fixtures may pass anything).
 */
export function parseConntrackLine(line: string, receiptNs?: number): ConntrackLine {
  const s = line.replace(/\s+$/, '');
  if (s.trim() === '' || NOISE.test(s.trim())) return { t: 'noise' };
  let ts: number;
  let type: ConntrackRow['type'];
  let rest: string;
  const m = HEAD.exec(s);
  if (m) {
    const usec = Number(m[2]!.padEnd(6, '0').slice(0, 6));
    ts = Number(m[1]) * 1e9 + usec * 1e3;
    type = m[3] as ConntrackRow['type'];
    rest = m[4]!;
  } else {
    const n = HEAD_NO_TS.exec(s);
    if (!n || receiptNs === undefined) return { t: 'malformed', reason: 'no [timestamp] [EVENT] header' };
    ts = receiptNs;
    type = n[1] as ConntrackRow['type'];
    rest = n[2]!;
  }
  const words = rest.trim().split(/\s+/);
  let i = 0;
  // optional layer 3: "ipv4 2" / "ipv6 10"
  if (/^ipv[46]$/.test(words[i] ?? '')) i += 2;
  const proto = words[i++];
  if (!proto || !/^[a-z][a-z0-9-]*$/.test(proto)) return { t: 'malformed', reason: 'no protocol' };
  if (/^\d+$/.test(words[i] ?? '')) i++; // protocol number
  if (/^\d+$/.test(words[i] ?? '')) i++; // timeout (absent on DESTROY of some versions)
  let state: string | null = null;
  if (/^[A-Z][A-Z_]+$/.test(words[i] ?? '')) state = words[i++]!;
  const dirs: Array<Record<string, string>> = [{}];
  const flags: string[] = [];
  let zone: number | null = null;
  for (; i < words.length; i++) {
    const w = words[i]!;
    const f = /^\[([A-Z_]+)\]$/.exec(w);
    if (f) { flags.push(f[1]!); continue; }
    if (w.startsWith('[')) continue; // [start=...] [stop=...] from ktimestamp: not needed
    const eq = w.indexOf('=');
    if (eq <= 0) continue;
    const k = w.slice(0, eq);
    const v = w.slice(eq + 1);
    if (k === 'zone') { if (/^\d+$/.test(v)) zone = Number(v); continue; }
    if (k === 'src' || k === 'dst' || k === 'sport' || k === 'dport') {
      let d = dirs[dirs.length - 1]!;
      if (k in d) {
        if (dirs.length >= 2) continue; // a third tuple (master of an expectation): ignore
        d = {};
        dirs.push(d);
      }
      d[k] = v;
    }
  }
  const [o, r] = [dirs[0]!, dirs[1] ?? {}];
  const addrOk = (a: string | undefined) => a === undefined || IPV4.test(a) || IPV6.test(a);
  if (!o.src || !o.dst) return { t: 'malformed', reason: 'no original src/dst' };
  if (!addrOk(o.src) || !addrOk(o.dst) || !addrOk(r.src) || !addrOk(r.dst)) return { t: 'malformed', reason: 'bad address' };
  const port = (p: string | undefined): number | null | 'bad' => {
    if (p === undefined) return null;
    if (!/^\d+$/.test(p) || Number(p) > 65535) return 'bad';
    return Number(p);
  };
  const ports = [port(o.sport), port(o.dport), port(r.sport), port(r.dport)];
  if (ports.includes('bad')) return { t: 'malformed', reason: 'bad port' };
  const [os, od, rs, rd] = ports as Array<number | null>;
  return {
    t: 'row',
    row: {
      ts_ns: ts, type, proto, state,
      orig_src: o.src, orig_dst: o.dst, orig_sport: os!, orig_dport: od!,
      reply_src: r.src ?? null, reply_dst: r.dst ?? null, reply_sport: rs!, reply_dport: rd!,
      flags: flags.length ? flags.join(' ') : null,
      zone: zone && zone !== 0 ? zone : null,
      raw: s.trim(),
    },
  };
}

export interface ParsedConntrack {
  rows: ConntrackRow[];
  malformed: number;
}

/** Parse a whole captured stream (fixtures, imports). */
export function parseConntrackText(text: string): ParsedConntrack {
  const out: ParsedConntrack = { rows: [], malformed: 0 };
  for (const line of text.split('\n')) {
    const p = parseConntrackLine(line);
    if (p.t === 'row') out.rows.push(p.row);
    else if (p.t === 'malformed') out.malformed++;
  }
  return out;
}

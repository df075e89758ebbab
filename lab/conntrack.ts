/**
 * The lab's own view of failed connections, from the kernel's conntrack table
 * (`conntrack -E -o timestamp,extended` in the node namespace). Pure parser + flow tracker.
 */
export interface CtEvent {
  ts_ns: number;
  type: 'NEW' | 'UPDATE' | 'DESTROY';
  proto: string;
  state: string | null;
  orig: { src: string; dst: string; sport: number; dport: number };
  reply: { src: string; dst: string; sport: number; dport: number };
  unreplied: boolean;
}

const LINE = /^\[(\d+)\.(\d+)\]\s+\[(NEW|UPDATE|DESTROY)\]\s+(\S+)\s+\d+\s+(\S+)\s+\d+\s+(.*)$/;

/** Parse conntrack -E -o timestamp,extended output; malformed lines are counted, never fatal. */
export function parseConntrack(text: string): { events: CtEvent[]; skipped: number } {
  const events: CtEvent[] = [];
  let skipped = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('conntrack v')) continue;
    const e = parseConntrackLine(line);
    if (e) events.push(e); else skipped++;
  }
  return { events, skipped };
}

export function parseConntrackLine(line: string): CtEvent | null {
  const m = LINE.exec(line.trim());
  if (!m) return null;
  const [, sec, frac, type, , proto, rest] = m;
  const ts_ns = Number(sec) * 1e9 + Number((frac! + '000000000').slice(0, 9));
  const toks = rest!.split(/\s+/);
  let state: string | null = null;
  if (toks[0] && /^[A-Z_]+$/.test(toks[0])) state = toks.shift()!;
  else if (toks[0] && /^\d+$/.test(toks[0])) { toks.shift(); if (toks[0] && /^[A-Z_]+$/.test(toks[0])) state = toks.shift()!; }
  const tuples: Array<Record<string, string>> = [];
  let cur: Record<string, string> | null = null;
  let unreplied = false;
  for (const t of toks) {
    if (t === '[UNREPLIED]') { unreplied = true; continue; }
    const kv = /^(src|dst|sport|dport)=(.+)$/.exec(t);
    if (!kv) continue;
    if (kv[1] === 'src') { cur = {}; tuples.push(cur); }
    if (cur) cur[kv[1]!] = kv[2]!;
  }
  if (tuples.length < 2) return null;
  const tup = (x: Record<string, string>) => ({ src: x.src ?? '', dst: x.dst ?? '', sport: Number(x.sport ?? 0), dport: Number(x.dport ?? 0) });
  return { ts_ns, type: type as CtEvent['type'], proto: proto!, state, orig: tup(tuples[0]!), reply: tup(tuples[1]!), unreplied };
}

export interface CtFailure {
  atNs: number;
  client: string;
  service: string;
  backendIp: string | null;
  backendPort: number | null;
  /** refused: SYN answered by RST (never established); reset: closed by the kill of its backend */
  kind: 'refused' | 'closed-at-kill';
}

interface Flow { established: boolean; establishedAt: number | null; finishing: boolean; closed: boolean }

const FINISHING = new Set(['FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE']);

/**
 * Flows to a service (VIP or NodePort) that failed: SYN_SENT -> CLOSE without ever being answered
 * with a SYN-ACK is a refused connection, attributed to the reply-direction source (the DNAT backend).
 * `kills` (backend ip -> SIGKILL instant): flows established before the kill whose first closing
 * transition (FIN or RST) comes within killWindowNs after it were cut by the kill.
 */
export function conntrackFailures(events: CtEvent[], isService: (ip: string, port: number) => boolean,
  kills: Array<{ ip: string; atNs: number }> = [], killWindowNs = 300e6): CtFailure[] {
  const flows = new Map<string, Flow>();
  const out: CtFailure[] = [];
  for (const e of events) {
    if (e.proto !== 'tcp' || !isService(e.orig.dst, e.orig.dport)) continue;
    const k = `${e.orig.src}:${e.orig.sport}>${e.orig.dst}:${e.orig.dport}`;
    let f = flows.get(k);
    if (!f || e.type === 'NEW') { f = { established: false, establishedAt: null, finishing: false, closed: false }; flows.set(k, f); }
    if (f.closed) continue;
    if ((e.state === 'SYN_RECV' || e.state === 'ESTABLISHED') && !f.established) { f.established = true; f.establishedAt = e.ts_ns; }
    const backendIp = e.reply.src || null;
    const base = { client: `${e.orig.src}:${e.orig.sport}`, service: `${e.orig.dst}:${e.orig.dport}`, backendIp, backendPort: e.reply.sport || null };
    const finishing = e.type === 'DESTROY' || (e.state != null && FINISHING.has(e.state));
    if (!f.established && finishing) {
      f.closed = true;
      // reply tuple unchanged from the original means no DNAT happened (no endpoint): backend unknown
      const dnat = !(e.reply.src === e.orig.dst && e.reply.sport === e.orig.dport);
      out.push({ atNs: e.ts_ns, ...base, backendIp: dnat ? backendIp : null, backendPort: dnat ? base.backendPort : null, kind: 'refused' });
      continue;
    }
    if (f.established && finishing && !f.finishing) {
      f.finishing = true;
      if (kills.some((x) => x.ip === backendIp && f!.establishedAt! < x.atNs && e.ts_ns >= x.atNs && e.ts_ns - x.atNs <= killWindowNs)) {
        out.push({ atNs: e.ts_ns, ...base, kind: 'closed-at-kill' });
      }
    }
    if (e.type === 'DESTROY') f.closed = true;
  }
  return out;
}

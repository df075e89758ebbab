/**
 * Every failed connection and its backend. Detection streams packets once with a bounded per-connection
 * table (finished connections are dropped at once, idle ones after a minute of capture time); probe
 * requests and tcp-reset-sent events add candidates; everything is merged per client ip:port.
 */
import type { FailureCause } from '../../schemas/analysis.js';
import { TCP, type StoredPacketRow } from '../../schemas/rows.js';
import type { BundleReader } from '../bundle-reader.js';
import { iso, joinAddr, ms, sane, splitAddr } from '../util.js';
import type { Facts } from './facts.js';
import { podLabel, type Identity } from './identity.js';
import { belongs, type PodSequence } from './pods.js';
import { BLOCK_BITS, BLOCK_MASK, NULL_I32, readPassRows, RowKind, tsOf } from './packet-pages.js';

export type FailureKind = 'syn-rst' | 'rst-before-response' | 'fin-before-response' | 'reused-unanswered' | 'syn-timeout' | 'syn-late-abandoned' | 'icmp-unreachable' | 'probe' | 'reset-sent';

export interface View { server: string; sport: number | null; ts: number; iface: string | null }

export interface Candidate {
  ts: number;
  client: string;
  cport: number | null;
  kinds: Set<FailureKind>;
  views: View[];
  via: Set<string>;
  synTs: number | null;
  establishedTs: number | null;
  /** name: per address family (ICMPv4 and ICMPv6 number their unreachable codes differently) */
  icmp: { type: number; code: number; from: string; name: string } | null;
  error: string | null;
  evidence: string[];
  probe: { remote: string; start: number; end: number | null } | null;
  /** the server answered an earlier request on this connection (so the app had accepted it): instant of that response */
  answeredAt?: number | null;
  /**
   * the first SYN went unanswered and only a retransmission was answered (a handshake the client had given up
   * on): that retransmission's instant; whatever that retransmission reached is not where the failed SYN went
   */
  lateSyn?: number | null;
  /**
   * a connection to the same ip:port established after this one was answered before this one failed: the
   * accept queue is FIFO, so the app had taken this one out of it (instant of that answer, and what)
   */
  dequeued?: { at: number; what: string } | null;
}

interface Conn {
  client: string; cport: number; server: string; sport: number; iface: string | null;
  syn: number; synAck: number | null; clientData: boolean; serverData: boolean; last: number;
  /** the last retransmission of the SYN before the handshake completed */
  resyn?: number;
  /** last payload from each side: a request after the last response is unanswered (keep-alive) */
  lastClient?: number; lastServer?: number; responses?: number;
  /**
   * the table's bookkeeping: its key (client to server: see key()), its slot in the table (one slot holds
   * both directions of a tuple: see slotOf()), its key's place in the order keys were added (the order of a
   * Map keyed by key), the sweeps done when it was last seen
   */
  key: number | string; slot: number | string; pos: number; seen: number;
}

const MAX_CANDIDATES = 200_000;

/** how long after its SYN an ICMP unreachable can come: neighbour resolution, 3 probes 1 s apart */
const ICMP_SYN_HORIZON_NS = 3e9;

/** what the packet pass reads of a row it needs whole (ICMP errors) */
const PACKET_COLUMNS = `id, ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack, payload_len,
  icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, NULL AS data`;

/**
 * A client whose first SYN went unanswered and whose handshake completed only on a retransmission, then
 * closed the connection without sending a byte within this long of the handshake, had given up on it: its
 * connect timeout fired as the kernel retransmitted (Linux's first SYN retransmission comes 1 s after the SYN,
 * the usual 1 s client timeout too). Real node, local-blackhole: the SYN unanswered while the service had no
 * endpoint (kube-proxy's reject, its ICMP error rate-limited away), the retransmission answered by the
 * replacement pod, the client's FIN 0.15 ms after that handshake, its own log "timeout". One held longer unused
 * (an idle pooled connection) is not judged.
 */
const LATE_ABANDON_NS = 1e9;

/**
 * A connection's conntrack flow begins (NEW, stamped on receipt) after its first SYN was captured; this much
 * earlier still counts (merged bundles align node clocks to a few ms), and NEWs this close together are the
 * same connection seen by several nodes. A flow on the same client ip:port is seconds to minutes apart (the
 * client's TIME_WAIT; conntrack keeps a closed flow 120 s and a new SYN on it destroys it only then).
 */
export const CT_FLOW_SLACK_NS = 1e9;

export class FailureDetector {
  /**
   * Connections by slot (see slotOf()), read and written as a Map keyed by key() (live, put, drop). A
   * connection idle for 60 s is forgotten at the first sweep that finds it so: here when next looked up
   * (fresh()), or by the purge every 8 sweeps, rather than by visiting every connection every second of
   * capture (the index of a chunked bundle holds no FIN of a connection closed normally, so every
   * connection of the last minute is here).
   */
  private conns = new Map<number | string, Conn | [Conn, Conn] | number>();
  /** connections at rest (see freeze()): their entry in conns is their number here */
  private cold = new ColdConns();
  /** connections whose SYN is unanswered (or were, until the next sweep checks): the ones a sweep can time out */
  private pending: Conn[] = [];
  private sweeps = 0;
  private nextPos = 0;
  /** per server ip:port, the latest handshake among connections it answered, and when (and which one) it answered */
  private served = new Map<number | string, { synAck: number; at: number; conn: Conn }>();
  readonly byClient = new Map<string, Candidate[]>();
  count = 0;
  capped = 0;
  lastTs = 0;
  private lastSweep = 0;
  /** kernel resets from a pod IP at an instant no pod's tenure covers: not attributed */
  readonly resetsOutsideTenure: string[] = [];
  /** ICMP errors about a connection whose SYN may predate the capture: not judged (blind spot) */
  readonly beforeCapture: string[] = [];
  /** each interface's first captured frame: the capture's start as this bundle shows it */
  private firstOnIface = new Map<string, number>();
  private lastIface: string | null | undefined = undefined;
  /** each interface's last frame fed so far (that of lastIface: lastOnRun), and its capture's end when known up front */
  private lastOnIface = new Map<string, number>();
  private lastOnRun = 0;
  private captureEnd = new Map<string, number>();
  /** SYNs still unanswered when their own interface's capture ended, although others' went on: not judged (blind spot) */
  readonly afterCapture: string[] = [];
  /**
   * Source NAT seen by conntrack: the post-NAT tuple on the wire (client side as rewritten, e.g. the node's
   * bridge address after kube-proxy's masquerade of off-cluster sources) -> the original client. On a real
   * node a connection's SYN leaves the bridge SNATed while its replies (de-NATed before the capture point
   * when br_netfilter is loaded) come back to the original client: without this, both halves look unanswered.
   */
  readonly snat = new Map<string, Array<{ client: string; cport: number; from: number }>>();

  /**
   * first: the flow's first conntrack event. A mapping holds from then (less 1 s: conntrack stamps on
   * receipt) until the next flow with the same NATed tuple begins (an unanswered SYN's entry lives on,
   * and its retransmissions come seconds later).
   */
  addSnat(r: { orig_src: string; orig_sport: number; reply_src: string; reply_sport: number; reply_dst: string; reply_dport: number; first?: number }): void {
    const k = `${r.reply_dst}|${r.reply_dport}|${r.reply_src}|${r.reply_sport}`;
    const l = this.snat.get(k) ?? [];
    l.push({ client: r.orig_src, cport: r.orig_sport, from: (r.first ?? -Infinity) - 1e9 });
    l.sort((a, b) => a.from - b.from);
    this.snat.set(k, l);
  }

  private snatAt(k: string, ts: number) {
    const l = this.snat.get(k);
    if (!l) return null;
    let hit: (typeof l)[number] | null = null;
    for (const m of l) if (m.from <= ts) hit = m;
    return hit;
  }

  private add(c: Omit<Candidate, 'kinds' | 'via' | 'views' | 'evidence'> & { kind: FailureKind; via: string; view?: View | null; evidence: string }): void {
    const key = `${c.client}|${c.cport ?? '?'}`;
    const list = this.byClient.get(key) ?? [];
    let hit = list.find((x) => Math.abs(x.ts - c.ts) <= 5e9 || (x.probe && c.ts >= x.probe.start - 1e7 && c.ts <= (x.probe.end ?? x.probe.start) + 1e9));
    if (!hit) {
      if (this.count >= MAX_CANDIDATES) { this.capped++; return; }
      hit = { ts: c.ts, client: c.client, cport: c.cport, kinds: new Set(), views: [], via: new Set(), synTs: null, establishedTs: null, icmp: null, error: null, evidence: [], probe: null };
      list.push(hit);
      this.byClient.set(key, list);
      this.count++;
    }
    const hadPkt = [...hit.via].some((v) => v !== 'probe');
    if (c.via !== 'probe') hit.ts = hadPkt ? Math.min(hit.ts, c.ts) : c.ts;
    else if (!hadPkt) hit.ts = Math.min(hit.ts, c.ts);
    hit.kinds.add(c.kind);
    hit.via.add(c.via);
    if (c.view && !hit.views.some((v) => v.server === c.view!.server && v.sport === c.view!.sport)) hit.views.push(c.view);
    if (c.synTs !== null) hit.synTs = hit.synTs === null ? c.synTs : Math.min(hit.synTs, c.synTs);
    if (c.establishedTs !== null) hit.establishedTs = hit.establishedTs === null ? c.establishedTs : Math.min(hit.establishedTs, c.establishedTs);
    if (c.icmp) hit.icmp = c.icmp;
    if (c.error) hit.error = hit.error ? hit.error : c.error;
    if (c.probe) hit.probe = c.probe;
    if (c.answeredAt != null) hit.answeredAt = c.answeredAt;
    if (c.dequeued) hit.dequeued = c.dequeued;
    if (c.lateSyn != null) hit.lateSyn = c.lateSyn;
    if (hit.evidence.length < 12 && !hit.evidence.includes(c.evidence)) hit.evidence.push(c.evidence);
  }

  private connFailure(c: Conn, kind: FailureKind, ts: number, what: string, icmp: Candidate['icmp'] = null): void {
    this.add({
      ts, client: c.client, cport: c.cport, kind, via: 'packets', view: { server: c.server, sport: c.sport, ts, iface: c.iface },
      synTs: c.syn, establishedTs: c.synAck, icmp, error: what, probe: null, answeredAt: kind === 'reused-unanswered' ? c.lastServer ?? null : null,
      lateSyn: kind === 'syn-late-abandoned' ? c.resyn ?? null : null,
      dequeued: this.dequeuedProof(c),
      evidence: `${what}: ${joinAddr(c.client, c.cport)} -> ${joinAddr(c.server, c.sport)} at ${iso(ts)}${c.iface ? ` on ${c.iface}` : ''} (SYN at ${iso(c.syn)}${c.synAck !== null ? `, handshake done ${iso(c.synAck)}` : ''})`,
    });
  }

  /** the client closed, without a byte, a connection whose handshake needed a SYN retransmission: it had given up */
  private lateAbandoned(c: Conn, ts: number, f: number): void {
    if (c.synAck === null || c.resyn === undefined || c.resyn > c.synAck || ts - c.synAck > LATE_ABANDON_NS) return;
    this.connFailure(c, 'syn-late-abandoned', c.syn, `SYN unanswered for ${ms(c.resyn - c.syn)} ms, answered only on its retransmission at ${iso(c.resyn)}; the client closed (${f & TCP.RST ? 'RST' : 'FIN'}) ${ms(ts - c.synAck)} ms after that handshake without sending a byte: it had given up (connect timeout)`);
  }

  private dequeuedProof(c: Conn): Candidate['dequeued'] {
    if (c.synAck === null) return null;
    const s = this.served.get(this.serverKey(c.server, c.sport));
    if (!s || s.synAck <= c.synAck) return null;
    return { at: s.at, what: `${joinAddr(s.conn.client, s.conn.cport)}, whose handshake completed at ${iso(s.synAck)} (after this one's), was answered at ${iso(s.at)}` };
  }

  /** Feed one packet (in capture order). */
  packet(p: StoredPacketRow): void {
    const ts = sane(p.ts_ns);
    if (ts === null) return;
    this.tick(ts, p.iface);
    if (this.snat.size && p.proto === 'tcp') p = this.unSnat(p);
    if (p.proto === 'tcp' && p.src && p.dst && p.sport !== null && p.dport !== null) {
      this.tcpSegment(ts, p.iface, p.src, p.sport, p.dst, p.dport, p.tcp_flags ?? 0, (p.payload_len ?? 0) > 0);
      return;
    }
    this.icmpError(ts, p);
  }

  /** What every packet does first: the latest instant, each interface's first and last frame, the periodic sweep. */
  private tick(ts: number, iface: string | null): void {
    if (ts > this.lastTs) this.lastTs = ts;
    if (iface !== this.lastIface) {
      if (this.lastIface !== undefined) this.lastOnIface.set(this.lastIface ?? '', this.lastOnRun);
      this.lastIface = iface;
      if (!this.firstOnIface.has(iface ?? '')) this.firstOnIface.set(iface ?? '', ts);
    }
    this.lastOnRun = ts;
    if (ts - this.lastSweep > 1e9) this.sweep(ts, false);
  }

  /**
   * Each interface's capture end (iface, or '' for none -> its last captured frame), known before the packet
   * pass: a chunked bundle's chunks hold every frame, its index only some (see captureEnds()).
   */
  setCaptureEnds(ends: Map<string, number>): void {
    for (const [k, v] of ends) if (Number.isFinite(v)) this.captureEnd.set(k, v);
  }

  /** The last instant the capture of `iface` is known to have run: its last frame fed so far, or its known end. */
  private capturedUntil(iface: string | null): number {
    const k = iface ?? '';
    let t = this.lastOnIface.get(k) ?? -Infinity;
    if (this.lastIface !== undefined && (this.lastIface ?? '') === k && this.lastOnRun > t) t = this.lastOnRun;
    const e = this.captureEnd.get(k);
    return e !== undefined && e > t ? e : t;
  }

  /**
   * A TCP segment of the packet pass (scanPackets): its columns as they are, no row object; what `packet`
   * does with a TCP row whose proto, addresses and ports are set, when no source NAT is known.
   */
  tcpRow(tsNs: unknown, iface: string | null, src: string, sport: number, dst: string, dport: number, flags: number | null, payloadLen: number | null, srcId?: number, dstId?: number): void {
    const ts = sane(tsNs);
    if (ts === null) return;
    this.tick(ts, iface);
    this.tcpSegment(ts, iface, src, sport, dst, dport, flags ?? 0, (payloadLen ?? 0) > 0, srcId, dstId);
  }

  /** an address's number in connection keys (what tcpRow's srcId and dstId take): -1 when it keys by text */
  addrNumber(a: string): number { return this.addrId(a); }

  /**
   * Addresses interned as small numbers, so that a connection's key is a number built without a string:
   * an address holding '|' or beyond the first 1024 keeps the string key `src|sport|dst|dport`, as does a
   * port that is not an integer 0..65535. Two tuples get the same key exactly when their string keys match.
   */
  private addrIds = new Map<string, number>();
  private addrId(a: unknown): number {
    const s = typeof a === 'string' ? a : String(a);
    let n = this.addrIds.get(s);
    if (n === undefined) {
      n = this.addrIds.size < 1024 && !s.includes('|') ? this.addrIds.size : -1;
      this.addrIds.set(s, n);
    }
    return n;
  }
  private key(src: unknown, sport: unknown, dst: unknown, dport: unknown): number | string {
    const a = this.addrId(src), b = this.addrId(dst), sp = portNum(sport), dp = portNum(dport);
    // 10 + 16 + 10 + 16 bits: exact in a double
    if (a >= 0 && b >= 0 && sp >= 0 && dp >= 0) return ((a * 65536 + sp) * 1024 + b) * 65536 + dp;
    return `${src}|${sport}|${dst}|${dport}`;
  }
  /**
   * The slot of a key in the table: a number key shares its slot with the reverse direction's (the smaller
   * of the two), so that one lookup finds a segment's connection in either direction; a string key has its own.
   */
  private slotOf(k: number | string, src: unknown, sport: unknown, dst: unknown, dport: unknown): number | string {
    if (typeof k === 'string') return k;
    const r = this.key(dst, dport, src, sport) as number;
    return r < k ? r : k;
  }
  private serverKey(ip: unknown, port: unknown): number | string {
    const a = this.addrId(ip), p = portNum(port);
    return a >= 0 && p >= 0 ? a * 65536 + p : `${ip}|${port}`;
  }

  /** The connection of key k in a slot's entry. */
  private static pick(e: Conn | [Conn, Conn] | undefined, k: number | string): Conn | undefined {
    if (e === undefined) return undefined;
    if (!Array.isArray(e)) return e.key === k ? e : undefined;
    return e[0].key === k ? e[0] : e[1].key === k ? e[1] : undefined;
  }
  /** c itself, unless a sweep since it was last seen found it idle for 60 s: then it is forgotten now. */
  private fresh(c: Conn | undefined): Conn | undefined {
    if (c !== undefined && c.synAck !== null && this.sweeps > c.seen && this.lastSweep - c.last > 60e9) { this.drop(c); return undefined; }
    return c;
  }
  /** The live connection of key k (in slot), as Map.get on a table keyed by k. */
  private live(slot: number | string, k: number | string): Conn | undefined {
    return this.fresh(FailureDetector.pick(this.entry(slot), k));
  }
  /**
   * The entry of a slot as the table's code reads it: a connection at rest comes back as a connection
   * object first (thaw), the same fields it had.
   */
  private entry(slot: number | string): Conn | [Conn, Conn] | undefined {
    const e = this.conns.get(slot);
    if (typeof e !== 'number') return e;
    const c = this.cold.thaw(e);
    this.conns.set(slot, c);
    return c;
  }
  /**
   * A connection whose handshake is done and that carried payload both ways has nothing left but what a
   * later segment of it might change (a reset, a keep-alive request, a reused port's SYN, an ICMP error):
   * rare in an index of the first segments. It rests as a row of typed arrays rather than an object with
   * its numbers boxed, which the garbage collector would copy and mark for as long as it stays (the
   * minute a connection stays without its FIN); the next segment of it brings it back as it was.
   */
  private freeze(c: Conn): void {
    if (!c.clientData || !c.serverData || c.synAck === null || typeof c.slot !== 'number' || typeof c.key !== 'number' || this.conns.get(c.slot) !== c) return;
    this.conns.set(c.slot, this.cold.freeze(c));
  }
  /** Add c, replacing the connection of its key if any: Map.set. */
  private put(c: Conn): void {
    const e = this.entry(c.slot);
    if (e === undefined) this.conns.set(c.slot, c);
    else if (!Array.isArray(e)) this.conns.set(c.slot, e.key === c.key ? c : [e, c]);
    else this.conns.set(c.slot, e[0].key === c.key ? [c, e[1]] : [e[0], c]);
  }
  /** Remove c (the connection of its key): Map.delete. */
  private drop(c: Conn): void {
    const e = this.entry(c.slot);
    if (e === c) this.conns.delete(c.slot);
    else if (Array.isArray(e)) {
      if (e[0] === c) this.conns.set(c.slot, e[1]);
      else if (e[1] === c) this.conns.set(c.slot, e[0]);
    }
  }

  private tcpSegment(ts: number, iface: string | null, src: string, sport: number, dst: string, dport: number, f: number, payload: boolean, a = this.addrId(src), b = this.addrId(dst)): void {
    // key(src, sport, dst, dport), and key(dst, dport, src, sport) below, with each address looked up once
    const sp = portNum(sport), dp = portNum(dport);
    const packed = a >= 0 && b >= 0 && sp >= 0 && dp >= 0;
    const fwd = packed ? ((a * 65536 + sp) * 1024 + b) * 65536 + dp : `${src}|${sport}|${dst}|${dport}`;
    const rev = packed ? ((b * 65536 + dp) * 1024 + a) * 65536 + sp : `${dst}|${dport}|${src}|${sport}`;
    // a number key's slot holds both directions: one lookup for the segment's connection either way
    const slotF = packed ? (fwd < rev ? fwd : rev) : fwd, slotR = packed ? slotF : rev;
    const e = this.entry(slotF);
    if ((f & TCP.SYN) && !(f & TCP.ACK)) {
      const c = this.fresh(FailureDetector.pick(e, fwd));
      // a SYN on a connection that carried payload opens a new one on the same 4-tuple (a reused
      // port; a chunked bundle's index drops the FINs that closed the old one); else it is a retransmission
      if (!c || c.clientData || c.serverData) {
        // a replaced connection's key keeps its place in the table
        // every field from the start: one object shape for every connection
        const n: Conn = { client: src, cport: sport, server: dst, sport: dport, iface, syn: ts, synAck: null, clientData: false, serverData: false, last: ts,
          resyn: undefined, lastClient: undefined, lastServer: undefined, responses: undefined, key: fwd, slot: slotF, pos: c ? c.pos : this.nextPos++, seen: this.sweeps };
        this.put(n);
        this.pending.push(n);
      } else {
        c.last = ts; c.seen = this.sweeps;
        if (c.synAck === null) c.resyn = ts;
      }
      return;
    }
    const c2s = this.fresh(FailureDetector.pick(e, fwd));
    if (c2s) {
      c2s.last = ts; c2s.seen = this.sweeps;
      // the client acknowledging proves a SYN-ACK reached it, also one no capture here saw as such: on a
      // node that DNATs a remote client's SYN the bridge sees the SYN-ACK only de-NATed (from the VIP), and
      // the link it came in on may start capturing a few ms later (real node 2: the first connection)
      if (c2s.synAck === null && (f & TCP.ACK) && !(f & TCP.RST)) c2s.synAck = ts;
      if (payload) { c2s.clientData = true; c2s.lastClient = ts; }
      if (f & (TCP.RST | TCP.FIN)) {
        if (c2s.serverData || (f & TCP.RST) || !c2s.clientData) this.drop(c2s);
        if (!c2s.clientData && !c2s.serverData) this.lateAbandoned(c2s, ts, f);
      }
      this.freeze(c2s);
      return;
    }
    const s2c = this.fresh(FailureDetector.pick(packed ? e : this.entry(slotR), rev));
    if (!s2c) return;
    s2c.last = ts; s2c.seen = this.sweeps;
    if ((f & TCP.SYN) && (f & TCP.ACK)) { if (s2c.synAck === null) s2c.synAck = ts; return; }
    // keep-alive: a request sent after the last response, then the server resets or closes the connection
    const pending = s2c.serverData && s2c.lastClient !== undefined && s2c.lastClient > (s2c.lastServer ?? 0);
    if ((f & (TCP.RST | TCP.FIN)) && pending) {
      this.drop(s2c);
      this.connFailure(s2c, 'reused-unanswered', ts, `${f & TCP.RST ? 'RST' : 'FIN'} with a request unanswered on a reused (keep-alive) connection, after ${s2c.responses ?? 1} response(s) on it (request sent ${iso(s2c.lastClient!)})`);
      return;
    }
    if (f & TCP.RST) {
      this.drop(s2c);
      if (s2c.serverData) return;
      if (s2c.synAck === null) this.connFailure(s2c, 'syn-rst', ts, 'SYN answered by RST');
      else this.connFailure(s2c, 'rst-before-response', ts, 'RST before any response on an established connection');
      return;
    }
    if (payload) {
      if (!(s2c.lastServer !== undefined && (s2c.lastClient ?? 0) < s2c.lastServer)) s2c.responses = (s2c.responses ?? 0) + 1;
      s2c.serverData = true; s2c.lastServer = ts;
      if (s2c.synAck !== null) {
        const k = this.serverKey(s2c.server, s2c.sport);
        const cur = this.served.get(k);
        if (!cur) this.served.set(k, { synAck: s2c.synAck, at: ts, conn: s2c });
        else if (s2c.synAck > cur.synAck) { cur.synAck = s2c.synAck; cur.at = ts; cur.conn = s2c; }
      }
    }
    if ((f & TCP.FIN) && !s2c.serverData) {
      this.drop(s2c);
      if (s2c.clientData) this.connFailure(s2c, 'fin-before-response', ts, 'FIN before any response on an established connection');
      return;
    }
    if ((f & TCP.FIN) && s2c.serverData) this.drop(s2c);
    this.freeze(s2c);
  }

  /** An ICMP unreachable about a connection: that connection failed (or, early in the capture, a blind spot). */
  private icmpError(ts: number, p: StoredPacketRow): void {
    const isUnreach = (p.proto === 'icmp' && p.icmp_type === 3) || (p.proto === 'icmp6' && p.icmp_type === 1);
    if (isUnreach && p.inner_src && p.inner_dst && p.inner_sport !== null && p.inner_dport !== null) {
      const key = this.key(p.inner_src, p.inner_sport, p.inner_dst, p.inner_dport);
      const slot = this.slotOf(key, p.inner_src, p.inner_sport, p.inner_dst, p.inner_dport);
      // an unreachable error comes up to ~3 s after its SYN (the kernel's neighbour resolution: 3 probes 1 s
      // apart): one about a connection never seen, that soon after its interface's capture began, answers a
      // SYN sent before the capture, whose fate the recording cannot tell (real node 2: host unreachable
      // 266 ms into the capture, a connection the client's own log shows did not fail)
      const since = ts - (this.firstOnIface.get(p.iface ?? '') ?? ts);
      if (p.inner_proto === 'tcp' && !this.live(slot, key) && since < ICMP_SYN_HORIZON_NS) {
        this.beforeCapture.push(`ICMP ${icmpName(p.proto ?? 'icmp', p.icmp_type ?? 0, p.icmp_code ?? 0)} from ${p.src} about ${joinAddr(p.inner_src, p.inner_sport)} -> ${joinAddr(p.inner_dst, p.inner_dport)} at ${iso(ts)}${p.iface ? ` on ${p.iface}` : ''}: ${ms(since)} ms after that interface's capture began, no SYN of it captured: the SYN may predate the capture`);
        return;
      }
      const c = this.live(slot, key) ?? { client: p.inner_src, cport: p.inner_sport, server: p.inner_dst, sport: p.inner_dport, iface: p.iface, syn: ts, synAck: null, clientData: false, serverData: false, last: ts,
        lastClient: undefined, lastServer: undefined, responses: undefined, key, slot, pos: -1, seen: this.sweeps };
      this.drop(c);
      const name = icmpName(p.proto ?? "icmp", p.icmp_type ?? 0, p.icmp_code ?? 0);
      this.connFailure(c, 'icmp-unreachable', ts, `ICMP ${name} from ${p.src}`, { type: p.icmp_type ?? 0, code: p.icmp_code ?? 0, from: p.src ?? '?', name });
    }
  }

  /** A packet of a source-NATed connection, seen with the original client's address and port. */
  private unSnat(p: StoredPacketRow): StoredPacketRow {
    const fwd = `${p.src}|${p.sport}|${p.dst}|${p.dport}`, rev = `${p.dst}|${p.dport}|${p.src}|${p.sport}`;
    // a packet of a connection already tracked as it is on the wire stays as it is: a NAT port can be
    // another connection's own (unNATed) port a moment later
    const kf = this.key(p.src, p.sport, p.dst, p.dport), kr = this.key(p.dst, p.dport, p.src, p.sport);
    if (this.live(this.slotOf(kf, p.src, p.sport, p.dst, p.dport), kf) || this.live(this.slotOf(kr, p.dst, p.dport, p.src, p.sport), kr)) return p;
    const c2s = this.snatAt(fwd, p.ts_ns);
    if (c2s) return { ...p, src: c2s.client, sport: c2s.cport };
    const s2c = this.snatAt(rev, p.ts_ns);
    if (s2c) return { ...p, dst: s2c.client, dport: s2c.cport };
    return p;
  }

  /**
   * SYNs unanswered for 3 s are timeouts (in the order of their keys in the table); connections idle for
   * 60 s are forgotten (bounded memory: see live()); the final sweep forgets every connection.
   * Unanswered means for as long as the SYN's own interface was captured: each interface has its own capture
   * (tcpdump), and one that stopped first (a stop that lost its last frames) cannot show an answer that came
   * after its end, however long the others went on; the final sweep judges at 1 s, and a SYN whose interface's
   * capture ended sooner than that after it is a blind spot (afterCapture), not a failure.
   */
  sweep(now: number, final: boolean): void {
    this.lastSweep = now;
    this.sweeps++;
    let due: Conn[] | null = null;
    const still: Conn[] = [];
    for (const c of this.pending) {
      // (a connection at rest has its handshake done: never one of these)
      const e = c.synAck === null ? this.conns.get(c.slot) : undefined;
      if (e === undefined || typeof e === 'number' || FailureDetector.pick(e, c.key) !== c) continue;
      const end = final || now - c.last > 60e9;
      // how long its interface's capture is known to have run after the SYN (a sweep at an instant past every
      // frame fed: the caller knows the capture, every interface's, ran until then)
      const seen = (now > this.lastTs ? now : Math.min(now, this.capturedUntil(c.iface))) - c.syn;
      if (seen > 3e9 || (end && seen > 1e9)) (due ??= []).push(c);
      else if (end) {
        this.drop(c);
        if (now - c.syn > 1e9) this.afterCapture.push(`SYN ${joinAddr(c.client, c.cport)} -> ${joinAddr(c.server, c.sport)} at ${iso(c.syn)}${c.iface ? ` on ${c.iface}` : ''}: no answer captured, but the capture of ${c.iface ?? 'its interface'} ended ${ms(Math.max(0, seen))} ms after it (its last frame ${iso(c.syn + Math.max(0, seen))}) while the capture went on to ${iso(now)}: an answer after that end cannot be told from none`);
      } else still.push(c);
    }
    this.pending = still;
    if (due) {
      due.sort((a, b) => a.pos - b.pos);
      for (const c of due) {
        this.drop(c);
        this.connFailure(c, 'syn-timeout', c.syn, `SYN never answered (last seen ${ms(c.last - c.syn)} ms after the first SYN)`);
      }
    }
    if (final) { this.conns.clear(); this.cold = new ColdConns(); this.pending = []; return; }
    if (this.sweeps % 8 === 0) {
      const idle = (c: Conn) => c.synAck !== null && this.sweeps > c.seen && now - c.last > 60e9;
      this.conns.forEach((e, slot) => {
        if (typeof e === 'number') { if (this.cold.idle(e, this.sweeps, now)) { this.conns.delete(slot); this.cold.free(e); } return; }
        if (!Array.isArray(e)) { if (idle(e)) this.drop(e); return; }
        if (idle(e[0])) this.drop(e[0]);
        if (idle(e[1])) this.drop(e[1]);
      });
    }
  }

  probe(r: { start_ns: number; end_ns: number | null; local_addr: string | null; local_port: number | null; remote: string; outcome: string; status: number | null; error: string | null }): void {
    const start = sane(r.start_ns);
    if (start === null || r.outcome === 'ok') return;
    const end = sane(r.end_ns);
    const client = r.local_addr ?? 'probe';
    this.add({
      ts: end ?? start, client, cport: r.local_port ?? null, kind: 'probe', via: 'probe', view: null, synTs: null, establishedTs: null, icmp: null,
      error: `${r.outcome}${r.error ? `: ${r.error}` : ''}`, probe: { remote: String(r.remote), start, end },
      evidence: `probe request ${joinAddr(client, r.local_port)} -> ${r.remote} started ${iso(start)}, ${r.outcome}${r.error ? ` (${r.error})` : ''}${end !== null ? ` after ${ms(end - start)} ms` : ''}`,
    });
  }

  resetSent(e: { ts: number; source: string; saddr: string; sport: number | null; daddr: string; dport: number | null; reason: string | null; state: string | null }): void {
    this.add({
      ts: e.ts, client: e.daddr, cport: e.dport, kind: 'reset-sent', via: e.source, view: { server: e.saddr, sport: e.sport, ts: e.ts, iface: null },
      synTs: null, establishedTs: null, icmp: null, error: null, probe: null,
      evidence: `kernel sent RST ${joinAddr(e.saddr, e.sport)} -> ${joinAddr(e.daddr, e.dport)} at ${iso(e.ts)}${e.reason ? ` reason ${e.reason}` : ''}${e.state ? ` state ${e.state}` : ''} [${e.source}]`,
    });
  }

  candidates(): Candidate[] {
    const out: Candidate[] = [];
    for (const l of this.byClient.values()) out.push(...l);
    return out.sort((a, b) => a.ts - b.ts);
  }
}

/**
 * Connections at rest (FailureDetector.freeze): each field of Conn in a column, a connection one row; NaN
 * stands for null (synAck) or undefined (the optional numbers). Rows are reused once thawed or forgotten.
 */
class ColdConns {
  private n = 0;
  private freeRows: number[] = [];
  private client: string[] = []; private server: string[] = []; private iface: (string | null)[] = [];
  private cport: number[] = []; private sport: number[] = [];
  private f64 = new Float64Array(0);
  private flags = new Uint8Array(0);
  /** syn, synAck, last, resyn, lastClient, lastServer, responses, key, slot, pos, seen */
  private static readonly W = 11;

  freeze(c: Conn): number {
    let i = this.freeRows.pop();
    if (i === undefined) {
      i = this.n++;
      if (i * ColdConns.W >= this.f64.length) {
        const rows = Math.max(4096, Math.ceil(this.n * 1.5));
        const f = new Float64Array(rows * ColdConns.W); f.set(this.f64); this.f64 = f;
        const g = new Uint8Array(rows); g.set(this.flags); this.flags = g;
      }
    }
    const o = i * ColdConns.W, v = this.f64;
    const opt = (x: number | null | undefined) => (x === null || x === undefined ? NaN : x);
    v[o] = c.syn; v[o + 1] = opt(c.synAck); v[o + 2] = c.last; v[o + 3] = opt(c.resyn); v[o + 4] = opt(c.lastClient); v[o + 5] = opt(c.lastServer);
    v[o + 6] = opt(c.responses); v[o + 7] = c.key as number; v[o + 8] = c.slot as number; v[o + 9] = c.pos; v[o + 10] = c.seen;
    this.client[i] = c.client; this.server[i] = c.server; this.iface[i] = c.iface; this.cport[i] = c.cport; this.sport[i] = c.sport;
    this.flags[i] = (c.clientData ? 1 : 0) | (c.serverData ? 2 : 0);
    return i;
  }

  /** the connection of row i, as it was frozen; the row is free again */
  thaw(i: number): Conn {
    const o = i * ColdConns.W, v = this.f64;
    const u = (x: number) => (Number.isNaN(x) ? undefined : x);
    const c: Conn = { client: this.client[i]!, cport: this.cport[i]!, server: this.server[i]!, sport: this.sport[i]!, iface: this.iface[i]!, syn: v[o]!,
      synAck: Number.isNaN(v[o + 1]!) ? null : v[o + 1]!, clientData: (this.flags[i]! & 1) !== 0, serverData: (this.flags[i]! & 2) !== 0, last: v[o + 2]!,
      resyn: u(v[o + 3]!), lastClient: u(v[o + 4]!), lastServer: u(v[o + 5]!), responses: u(v[o + 6]!), key: v[o + 7]!, slot: v[o + 8]!, pos: v[o + 9]!, seen: v[o + 10]! };
    this.free(i);
    return c;
  }

  /** FailureDetector.fresh's test on row i: handshake done, not seen since the last sweep, idle 60 s */
  idle(i: number, sweeps: number, now: number): boolean {
    const o = i * ColdConns.W, v = this.f64;
    return !Number.isNaN(v[o + 1]!) && sweeps > v[o + 10]! && now - v[o + 2]! > 60e9;
  }

  free(i: number): void {
    this.client[i] = this.server[i] = ''; this.iface[i] = null;
    this.freeRows.push(i);
  }
}

/** a port as the number the connection key packs (an integer 0..65535, also as canonical text), else -1 */
function portNum(p: unknown): number {
  if (typeof p === 'number') return Number.isInteger(p) && p >= 0 && p <= 65535 ? p : -1;
  if (typeof p === 'string' && /^(0|[1-9]\d{0,4})$/.test(p)) { const n = Number(p); return n <= 65535 ? n : -1; }
  return -1;
}

function icmpName(proto: string, type: number, code: number): string {
  if (proto === 'icmp6') return ['no-route', 'admin-prohibited', 'beyond-scope', 'addr-unreachable', 'port-unreachable', 'policy-fail', 'reject-route'][code] ?? `unreachable code ${code}`;
  const names: Record<number, string> = { 0: 'net-unreachable', 1: 'host-unreachable', 3: 'port-unreachable', 9: 'net-prohibited', 10: 'host-prohibited', 13: 'admin-prohibited' };
  return names[code] ?? `unreachable code ${code}`;
}

/** Each interface's capture end in a chunked bundle (its chunks' last frame), for FailureDetector.setCaptureEnds. */
export function captureEnds(reader: BundleReader): Map<string, number> {
  const m = new Map<string, number>();
  if (!reader.hasChunks()) return m;
  for (const r of reader.db.prepare('SELECT iface, max(last_ts_ns) AS t FROM packet_chunks GROUP BY iface').all() as Array<{ iface: string | null; t: number | null }>) {
    const t = sane(r.t);
    if (t !== null) m.set(r.iface ?? '', t);
  }
  return m;
}

/** Failed probe requests as candidates. */
export function feedProbes(d: FailureDetector, reader: BundleReader): void {
  for (const r of reader.probeRequests()) d.probe(r);
}

type PassTuple = [unknown, string | null, string | null, string | null, number | null, number | null, unknown, number | null];

/**
 * One pass over the packets: ICMP and TCP only, in capture order. Each value handed from SQLite to
 * JavaScript costs (~0.3 µs a row, ~0.05 µs a column: most of the pass), so a TCP row carries only the
 * columns the detector reads and goes to it without a row object; a row of anything else (ICMP errors,
 * a few) carries its id as text in the flags column and is read whole by that id.
 */
export function scanPackets(d: FailureDetector, reader: BundleReader, o: { pages?: boolean } = {}): void {
  if (!reader.has('packets')) return;
  if (reader.has('conntrack')) {
    const nat = reader.db.prepare(`SELECT orig_src, orig_sport, reply_src, reply_sport, reply_dst, reply_dport, MIN(ts_ns) AS first FROM conntrack
      WHERE proto = 'tcp' AND reply_dst IS NOT NULL AND orig_src IS NOT NULL AND (reply_dst != orig_src OR reply_dport != orig_sport)
      GROUP BY orig_src, orig_sport, orig_dst, orig_dport, reply_src, reply_sport, reply_dst, reply_dport`);
    for (const r of nat.iterate() as IterableIterator<{ orig_src: string; orig_sport: number; reply_src: string; reply_sport: number; reply_dst: string; reply_dport: number; first: number }>) d.addSnat(r);
  }
  // in capture order across interfaces (the packets_ts index): rows are inserted per interface (a chunk of
  // one interface's frames at a time, or one capture process each), so id order can put one interface's
  // whole handshake before the other interface's SYN of the same connection, which then looks unanswered
  const cols = `ts_ns, iface, src, dst, sport, dport, CASE WHEN proto = 'tcp' AND typeof(tcp_flags) != 'text' THEN tcp_flags ELSE 'id ' || id END, payload_len`;
  const one = reader.db.prepare(`SELECT ${PACKET_COLUMNS} FROM packets WHERE id = CAST(? AS INTEGER)`);
  const nat = d.snat.size > 0;
  const tcp = (ts: unknown, iface: string | null, src: string | null, dst: string | null, sport: number | null, dport: number | null, flags: number | null, plen: number | null, srcId?: number, dstId?: number): void => {
    if (!nat && src && dst && sport !== null && dport !== null) d.tcpRow(ts, iface, src, sport, dst, dport, flags, plen, srcId, dstId);
    else {
      d.packet({ id: 0, ts_ns: ts as number, iface, linktype: 1, caplen: 0, len: 0, l3: null, src, dst, proto: 'tcp', sport, dport, tcp_flags: flags, seq: null, ack: null, payload_len: plen,
        icmp_type: null, icmp_code: null, inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: null });
    }
  };
  const feed = (r: PassTuple): void => {
    const k = r[6];
    if (typeof k === 'string') {
      const row = one.get(k.slice(3)) as StoredPacketRow | undefined;
      if (!row) return;
      // a TCP row (one with text flags comes this way) carries no ICMP columns, as in the rest of the pass
      if (row.proto === 'tcp') { row.icmp_type = null; row.icmp_code = null; row.inner_src = null; row.inner_dst = null; row.inner_sport = null; row.inner_dport = null; row.inner_proto = null; }
      d.packet(row);
      return;
    }
    tcp(r[0], r[1], r[2], r[3], r[4], r[5], k as number | null, r[7]);
  };
  const rows = o.pages === false ? null : reader.takePassRows() ?? readPassRows(reader.db, reader.openedPath);
  if (rows) {
    // the same rows from the file's pages (packet-pages.ts): only the odd ones are read in SQL, by id
    const byId = reader.db.prepare(`SELECT ${cols} FROM packets WHERE id = ?`).raw(true);
    const s = rows.strings, n = rows.n, order = rows.order;
    const i32 = (v: number): number | null => (v === NULL_I32 ? null : v);
    // each string's number in the detector's keys, looked up once per string rather than per row
    const ids = new Int32Array(s.length).fill(-2);
    const id = (k: number): number | undefined => (k < 0 ? undefined : ids[k] !== -2 ? ids[k] : (ids[k] = d.addrNumber(s[k]!)));
    for (let j = 0; j < n; j++) {
      const i = order === null ? j : order[j]!;
      const blk = rows.blocks[i >>> BLOCK_BITS]!, k = i & BLOCK_MASK;
      const kind = blk.kind[k]!;
      if (kind === RowKind.Tcp) {
        const a = blk.iface[k]!, b = blk.src[k]!, c = blk.dst[k]!;
        tcp(tsOf(blk, k), a < 0 ? null : s[a]!, b < 0 ? null : s[b]!, c < 0 ? null : s[c]!, i32(blk.sport[k]!), i32(blk.dport[k]!), i32(blk.flags[k]!), i32(blk.plen[k]!), id(b), id(c));
      } else if (kind === RowKind.ById) {
        const r = byId.get(blk.rowid[k]!) as PassTuple | undefined;
        if (r) feed(r);
      }
    }
  } else {
    const st = reader.db.prepare(`SELECT ${cols} FROM packets WHERE proto IN ('tcp','icmp','icmp6') ORDER BY ts_ns, id`).raw(true);
    for (const r of st.iterate() as IterableIterator<PassTuple>) feed(r);
  }
  // a chunked bundle indexes only some frames: the capture ran until its last frame, so SYNs still
  // unanswered then are judged against that instant, as when every frame was a row
  if (reader.hasChunks()) {
    const t = (reader.db.prepare('SELECT max(last_ts_ns) AS t FROM packet_chunks').get() as { t: number | null }).t;
    if (typeof t === 'number' && Number.isFinite(t)) d.lastTs = Math.max(d.lastTs, t);
  }
}

/**
 * Kernel resets count only when the sender held a pod IP at that instant (a backend, not a client
 * aborting); a reset from an IP outside every pod's observed tenure names no pod and is set aside.
 */
export function feedResets(d: FailureDetector, facts: Facts, id: Identity): void {
  for (const r of facts.resets) {
    const hit = id.podAt(r.saddr, r.ts);
    if (hit?.exact) d.resetSent(r);
    else if (hit) d.resetsOutsideTenure.push(`RST ${joinAddr(r.saddr, r.sport)} -> ${joinAddr(r.daddr, r.dport)} at ${iso(r.ts)} [${r.source}]: ${hit.how.replace(/^.*; /, '')} of ${podLabel(hit.pod)}, so no pod held the address`);
  }
}

/**
 * Every step in one go: probes, packets, the final sweep, tcp-reset-sent events. analyzeBundle runs the
 * steps as separate stages so that one failing source does not drop what the others found.
 */
export function detectFailures(reader: BundleReader, facts: Facts, id: Identity): FailureDetector {
  const d = new FailureDetector();
  feedProbes(d, reader);
  d.setCaptureEnds(captureEnds(reader));
  scanPackets(d, reader);
  d.sweep(d.lastTs, true);
  feedResets(d, facts, id);
  return d;
}

export interface ResolvedFailure {
  c: Candidate;
  at: number;
  client: string;
  service: string | null;
  backend: { ip: string | null; port: number | null; pod: string | null; podKey: string | null };
  cause: FailureCause;
  evidence: string[];
  via: string[];
  error: string | null;
  /** the node whose rules DNATed this connection (null: unknown) and how that is known */
  routed?: Routed;
}

/**
 * Who routed a connection to its backend. `remote`: it arrived already DNATed from a node other than the
 * recording one(s); `node` names that node when the bundle says (a merged bundle's DNAT, the client pod's
 * node), else null. `hostSource`: it came from a node's own address (the kubelet's probes, host traffic).
 */
export interface Routed { node: string | null; remote: boolean; hostSource: boolean; rulesRecorded: boolean; why: string | null }

export interface ResolveContext {
  id: Identity;
  facts: Facts;
  /** pod sequences by pod key */
  seqs: Map<string, PodSequence>;
  vips: Set<string>;
  /**
   * the conntrack row of client:cport nearest t (a DNAT first). synAt: the connection's first SYN was captured
   * then, so only its own flow counts (from the first NEW at most CT_FLOW_SLACK_NS before it, until a NEW on that
   * client ip:port at least CT_FLOW_SLACK_NS after that one); before: only rows stamped up to that instant
   */
  conntrack: (client: string, cport: number, t: number, o?: { synAt?: number | null; before?: number }) => { orig_dst: string | null; orig_dport: number | null; reply_src: string | null; reply_sport: number | null; ts: number; state: string | null; node?: string | null } | null;
  /**
   * why `conntrack` found no row for client:cport at t; gap: conntrack recorded nothing then (no records, its
   * recording had ended or not begun), else that client port's rows belong to another flow; null: no row at all
   */
  conntrackMiss?: (client: string, cport: number, t: number) => { why: string; gap: boolean } | null;
  /** the recording node (a merged bundle's reference node) */
  node?: string | null;
  /** every node whose bundle is in this one (merged: several) */
  nodes?: string[];
  /** nodes' own addresses → node (recorded interface addresses, pods' status.hostIP) */
  nodeAddrs?: Map<string, string | null>;
}

/** `node/iface` (merged bundles) → node */
function nodeOfIface(iface: string | null | undefined, nodes: string[]): string | null {
  const m = /^([^/]+)\//.exec(iface ?? '');
  return m && nodes.includes(m[1]!) ? m[1]! : null;
}

function routedBy(c: Candidate, ctx: ResolveContext, service: string | null, backend: { ip: string | null; port: number | null }, ctNode: string | null | undefined): Routed {
  const nodes = ctx.nodes ?? [];
  const here = ctx.node ?? null;
  const merged = nodes.length > 1;
  const be = backend.ip ? joinAddr(backend.ip, backend.port) : null;
  if (c.probe || (service !== null && service !== be)) {
    const sa = service ? splitAddr(service) : null;
    const vipView = c.views.find((v) => sa && v.server === sa.ip);
    const node = merged ? nodeOfIface(vipView?.iface, nodes) ?? ctNode ?? null : here;
    return { node: node ?? here, remote: false, hostSource: false, rulesRecorded: true, why: merged && node ? `DNATed on ${node} (${vipView && nodeOfIface(vipView.iface, nodes) ? `its capture saw ${service}` : 'its conntrack'}): routed by ${node}'s rules` : null };
  }
  if (!backend.ip) return { node: here, remote: false, hostSource: false, rulesRecorded: true, why: null };
  const hostNode = (ctx.nodeAddrs ?? ctx.id.nodeAddrs()).get(c.client);
  const seenOn = merged ? nodeOfIface(c.views.find((v) => v.server === backend.ip)?.iface, nodes) : here;
  // the receiving node's own address: host traffic (the kubelet's probes); another recorded node's address:
  // traffic that node sent or SNATed after its kube-proxy DNATed it
  if (hostNode !== undefined && (!merged || hostNode === null || seenOn === null || hostNode === seenOn)) {
    return { node: hostNode ?? here, remote: false, hostSource: true, rulesRecorded: true, why: `from ${c.client}, the node's own address${hostNode ? ` (${hostNode})` : ''}: host traffic straight to the pod, not routed by a service` };
  }
  if (hostNode) {
    return { node: hostNode, remote: true, hostSource: false, rulesRecorded: nodes.includes(hostNode),
      why: `already DNATed on another node: from ${c.client}, ${hostNode}'s own address (its kube-proxy DNATs and masquerades what it forwards), not ${seenOn}'s; a failure of ${hostNode}'s routing, attributed to the pod here` };
  }
  const clientPod = ctx.id.podAt(c.client, c.ts);
  const clientNode = clientPod?.pod.node ?? null;
  if (clientNode && clientNode === seenOn) return { node: clientNode, remote: false, hostSource: false, rulesRecorded: true, why: null };
  const recorded = clientNode !== null && nodes.includes(clientNode);
  return {
    node: clientNode, remote: true, hostSource: false, rulesRecorded: recorded,
    why: clientNode
      ? `already DNATed on another node: the client ${podLabel(clientPod!.pod)} runs on ${clientNode}, whose kube-proxy chose ${be}${recorded ? '' : ` (${clientNode}'s rules are not in this bundle: record it and merge)`}; a failure of ${clientNode}'s routing, attributed to the pod here`
      : `already DNATed on another node before it reached ${seenOn ?? 'this node'}: straight to the pod IP from ${c.client}, not this node's address, and no DNAT of it in ${merged ? 'any recorded node\'s' : 'this node\'s'} conntrack or capture; a failure of a remote node's routing, attributed to the pod here (remote node unknown: ${merged ? 'no merged bundle' : 'a single-node bundle'} holds that node's rules)`,
  };
}

export function resolveFailure(c: Candidate, ctx: ResolveContext): ResolvedFailure {
  const ev = [...c.evidence];
  const { id } = ctx;
  let service: string | null = null;
  let backend: { ip: string | null; port: number | null } = { ip: null, port: null };
  if (c.probe) {
    const a = splitAddr(c.probe.remote);
    service = a ? joinAddr(a.ip, a.port) : c.probe.remote;
  }
  for (const v of c.views) {
    const isVip = ctx.vips.has(v.server) || ctx.vips.has(joinAddr(v.server, v.sport));
    const isPod = id.podAt(v.server, v.ts) !== null;
    if (isVip && !isPod) { if (!service) service = joinAddr(v.server, v.sport); }
    else if (isPod || !isVip) { if (backend.ip === null || isPod) backend = { ip: v.server, port: v.sport }; }
  }
  let ctNode: string | null | undefined = null;
  let ctRow = false;
  if (c.cport !== null) {
    // a handshake given up on (syn-late-abandoned): the retransmission that was answered opened the flow
    // conntrack shows (the first SYN, dropped or rejected, was never confirmed); it reached a backend only
    // after the client's attempt had failed, so it is not this failure's backend
    const ct = ctx.conntrack(c.client, c.cport, c.ts, { synAt: c.synTs, before: c.lateSyn ?? undefined });
    ctRow = !!ct;
    const late = c.lateSyn != null ? ctx.conntrack(c.client, c.cport, c.lateSyn, { synAt: c.lateSyn }) : null;
    if (late && late.ts >= c.lateSyn! && late.reply_src && late.reply_src !== late.orig_dst) {
      const lp = id.podAt(late.reply_src, late.ts);
      ev.push(`conntrack: only the retransmission was tracked, ${joinAddr(c.client, c.cport)} -> ${joinAddr(late.orig_dst, late.orig_dport)} DNAT to ${joinAddr(late.reply_src, late.reply_sport)}${lp ? ` (${podLabel(lp.pod)})` : ''} at ${iso(late.ts)}${late.state ? ` (${late.state})` : ''}: answered after the client had given up, not where its first SYN went`);
      c.via.add('conntrack');
      if (!service && late.orig_dst) service = joinAddr(late.orig_dst, late.orig_dport);
    }
    if (ct) {
      if (ct.reply_src && ct.reply_src !== ct.orig_dst) ctNode = ct.node;
      // the pre-DNAT destination only when this row is the DNAT (straight to a pod IP, the service was chosen elsewhere or never)
      if (ct.orig_dst && !service && ct.reply_src !== ct.orig_dst) service = joinAddr(ct.orig_dst, ct.orig_dport);
      if (ct.reply_src && ct.reply_src !== ct.orig_dst) {
        if (backend.ip === null || backend.ip === ct.orig_dst) backend = { ip: ct.reply_src, port: ct.reply_sport };
        ev.push(`conntrack: ${joinAddr(c.client, c.cport)} -> ${joinAddr(ct.orig_dst, ct.orig_dport)} DNAT to ${joinAddr(ct.reply_src, ct.reply_sport)} (${iso(ct.ts)}${ct.state ? `, ${ct.state}` : ''})`);
        c.via.add('conntrack');
      } else if (ct.reply_src === ct.orig_dst) ev.push(`conntrack: ${joinAddr(c.client, c.cport)} -> ${joinAddr(ct.orig_dst, ct.orig_dport)} was not DNATed (no endpoint chosen)`);
    }
  }
  // a view equal to the service is not a backend
  if (backend.ip !== null && service && joinAddr(backend.ip, backend.port) === service && !id.podAt(backend.ip, c.ts)) backend = { ip: null, port: null };
  const hit = backend.ip ? id.podAt(backend.ip, c.ts) : null;
  if (hit) ev.push(`backend ${joinAddr(backend.ip, backend.port)} was held by pod ${podLabel(hit.pod)}${hit.pod.uid ? ` (uid ${hit.pod.uid})` : ''} at that instant (${hit.how})`);
  else if (backend.ip) ev.push(`no pod is known to have held ${backend.ip} at that instant`);
  else {
    const miss = c.cport !== null && !ctRow ? ctx.conntrackMiss?.(c.client, c.cport, c.synTs ?? c.ts) ?? null : null;
    // a handshake given up on whose retransmission's flow conntrack holds: its first SYN was never confirmed
    if (c.lateSyn != null && !ctRow && !miss?.gap) ev.push(`no backend: the SYN that failed was never DNATed where this node could see it (no conntrack entry for this client port before its retransmission at ${iso(c.lateSyn)})`);
    else ev.push(miss ? `backend unknown: no packet after DNAT, and no conntrack entry of this connection: ${miss.why}` : 'backend unknown: no packet after DNAT and no conntrack entry for this client port');
  }
  const seq = hit ? ctx.seqs.get(hit.pod.key) ?? null : null;
  const routed = routedBy(c, ctx, service, backend, ctNode);
  if (routed.why) ev.push(routed.why);
  const { cause, why } = classify(c, ctx, service, backend.ip, hit?.pod.key ?? null, seq, routed);
  ev.push(...why);
  return {
    c, at: c.ts, client: joinAddr(c.client, c.cport), service,
    backend: { ip: backend.ip, port: backend.port, pod: hit ? podLabel(hit.pod) : null, podKey: hit?.pod.key ?? null },
    cause, evidence: ev, via: [...c.via].sort(), error: c.error, routed,
  };
}

/** A candidate whose resolution failed: still a failure, cause unknown, the error in its evidence. */
export function unresolvedFailure(c: Candidate, err: unknown): ResolvedFailure {
  const msg = String((err as Error)?.message ?? err).replace(/[\r\n]+/g, ' ').slice(0, 200);
  return {
    c, at: c.ts, client: joinAddr(c.client, c.cport), service: c.probe ? c.probe.remote : null,
    backend: { ip: null, port: null, pod: null, podKey: null },
    cause: 'unknown', evidence: [...c.evidence, `cause unknown: resolving this failure failed (${msg})`], via: [...c.via].sort(), error: c.error,
  };
}

/**
 * nft monitor lines are stamped on receipt, after the kernel committed the change: a rule change can be
 * in force up to this long before its stamp (measured 25-37 ms on a loaded 2-core node). Failures with no
 * backend inside that gap are judged by it.
 */
export const RULE_RECEIPT_SLACK_NS = 50e6;

function noEndpointActive(ctx: ResolveContext, service: string | null, t: number): { action: string; service: string; receivedAfterMs?: number; emptiedAt?: number; receivedAt?: number } | null {
  if (!service) return null;
  const sa = splitAddr(service);
  let state: { action: string; service: string; added: boolean; receivedAfterMs?: number } | null = null;
  for (const r of ctx.facts.noEp) {
    if (r.ts > t + RULE_RECEIPT_SLACK_NS) break;
    const v = r.vip ? splitAddr(r.vip) : null;
    const match = (r.vip && r.vip === service) || (v && sa && v.ip === sa.ip && (v.port === null || v.port === sa.port)) || r.service === service
      || (r.node_port !== null && sa && sa.port === r.node_port);
    if (!match) continue;
    if (r.ts <= t) state = { action: r.action, service: r.service, added: r.added };
    // a no-endpoint rule received just after the failure was already in force when it happened
    else if (r.added && !state?.added) state = { action: r.action, service: r.service, added: true, receivedAfterMs: Math.round((r.ts - t) / 1e4) / 100 };
  }
  if (state?.added) return state;
  // ... or received later still, when this node's rules had routed its service to no endpoint since before
  // the failure: kube-proxy writes the reject/drop in the very sync that removes a service's last endpoint, but
  // the rule can come in a later burst's diff stamped with that burst (real node, iptables: a monitor line after
  // the burst closed deferred the diff; the last endpoint's removal kept its own line, the reject came 588 ms late)
  const next = ctx.facts.noEp.find((r) => r.added && r.ts > t && (r.vip === service || (r.node_port !== null && sa?.port === r.node_port)));
  if (next && (!state || state.added === false)) {
    const emptiedAt = lastEndpointRemoved(ctx, next.service, t, next.ts);
    if (emptiedAt !== null) return { action: next.action, service: next.service, emptiedAt, receivedAt: next.ts };
  }
  return null;
}

/**
 * When this node's rules last removed the last endpoint of `service` at or before t, with no endpoint added
 * since, up to `until`: the instant its rules started routing it to no endpoint (null: they did not). The
 * rules at the start of the recording are not events: an endpoint removed without an addition counts as
 * present until then, and any other endpoint the service's EndpointSlices (as received) still listed as
 * serving or ready at that removal may still have been routed: then it was not the last.
 */
function lastEndpointRemoved(ctx: ResolveContext, service: string, t: number, until: number): number | null {
  const svc = service.replace(/:[^:/]*$/, '');
  const eps = new Set<string>();
  let emptied: number | null = null;
  for (const r of ctx.facts.rules) {
    if (r.service !== service || r.ts > until) continue;
    const k = `${r.node ?? ''}|${r.ip}:${r.port ?? ''}`;
    if (r.added) { eps.add(k); emptied = null; continue; }
    eps.delete(k);
    if (eps.size > 0) continue;
    const listed = new Map<string, boolean>();
    for (const c of ctx.facts.sliceChanges) {
      if (c.ts > r.ts) break;
      if (`${c.namespace ?? ''}/${c.service ?? ''}` === svc) listed.set(c.ip, c.change !== 'removed' && (c.serving !== false || c.ready === true));
    }
    if (![...listed].some(([ip, on]) => on && ip !== r.ip)) emptied = r.ts;
  }
  return emptied !== null && emptied <= t ? emptied : null;
}

/**
 * The no-endpoint rule of `service` removed (received) at most `afterNs` after t and at most
 * RULE_RECEIPT_SLACK_NS before it: the sync that replaced the reject/drop by the first endpoint's DNAT.
 */
function noEndpointJustRemoved(ctx: ResolveContext, service: string | null, t: number, afterNs = 200e6): { action: string; service: string; ts: number } | null {
  const sa = service ? splitAddr(service) : null;
  if (!sa) return null;
  for (const r of ctx.facts.noEp) {
    if (r.added || r.ts < t - RULE_RECEIPT_SLACK_NS || r.ts > t + afterNs) continue;
    const v = r.vip ? splitAddr(r.vip) : null;
    if ((v && v.ip === sa.ip && (v.port === null || v.port === sa.port)) || (r.node_port !== null && sa.port === r.node_port)) return { action: r.action, service: r.service, ts: r.ts };
  }
  return null;
}

function classify(c: Candidate, ctx: ResolveContext, service: string | null, backendIp: string | null, podKey: string | null, seq: PodSequence | null, routed: Routed): { cause: FailureCause; why: string[] } {
  const t = c.ts;
  const noEp = noEndpointActive(ctx, service, t);
  // a SYN that reached no backend while kube-proxy's sync swapped the service's reject/drop rule for the first
  // endpoint's DNAT: iptables-nft commits the filter table (the reject) and the nat table (the DNAT) apart, so
  // for a few ms the node had neither and answered the SYN itself (seen on the real node, iptables mode)
  const swap = !backendIp && !noEp ? noEndpointJustRemoved(ctx, service, t) : null;
  if (swap) {
    return { cause: 'no-endpoint', why: [`cause no-endpoint: no backend was reached while this node's sync replaced its ${swap.action} rule for ${swap.service} (no endpoint) by the first endpoint's DNAT (received ${iso(swap.ts)}, ${ms(Math.abs(swap.ts - t))} ms ${swap.ts <= t ? "before" : "after"} this failure): between the filter and nat commits the service had no rule at all`] };
  }
  if (!backendIp && (c.icmp || noEp || c.kinds.has('syn-timeout'))) {
    if (noEp) {
      return { cause: 'no-endpoint', why: [noEp.emptiedAt !== undefined
        ? `cause no-endpoint: this node's rules routed ${noEp.service} to no endpoint since its last endpoint's removal at ${iso(noEp.emptiedAt)}, and kube-proxy ${noEp.action}s a service with no endpoint in that same sync (the ${noEp.action} rule was received with a later snapshot, at ${iso(noEp.receivedAt!)}); no backend was reached`
        : noEp.receivedAfterMs !== undefined
        ? `cause no-endpoint: this node's rules ${noEp.action} traffic to ${noEp.service} (no usable local endpoint); that change was received ${noEp.receivedAfterMs} ms after this failure, within the receipt delay of nft monitor, and no backend was reached`
        : `cause no-endpoint: this node's rules ${noEp.action} traffic to ${noEp.service} (no usable local endpoint) since before ${iso(t)}`] };
    }
    if (c.icmp?.name === 'admin-prohibited') return { cause: 'no-endpoint', why: [`cause no-endpoint: the node answered with ICMP admin-prohibited (reject of a service with no endpoint) and no backend was reached`] };
    if (c.icmp?.name === 'port-unreachable' && !ctx.id.podAt(c.icmp.from, t)) return { cause: 'no-endpoint', why: [`cause no-endpoint: ICMP port-unreachable from ${c.icmp.from} (not a pod) and no backend was reached`] };
  }
  if (!podKey) {
    return { cause: 'unknown', why: [`cause unknown: ${backendIp ? `no pod known for backend ${backendIp}` : 'the backend is not in the bundle (need packets on the pod bridge or conntrack)'}`] };
  }
  const pod = ctx.id.pods.get(podKey)!;
  const label = podLabel(pod);
  const listens = ctx.facts.listens.filter((l) => belongs(ctx.id, pod, l.pid, l.netns, l.podUid));
  const listenAfter = listens.filter((l) => l.ts > t).sort((a, b) => a.ts - b.ts)[0];
  const listenBefore = listens.some((l) => l.ts <= t);
  if (listenAfter && !listenBefore && (!seq || seq.listenerClosed === null || seq.listenerClosed > t)) {
    return { cause: 'not-ready', why: [`cause not-ready: ${label} started listening only at ${iso(listenAfter.ts)}, ${ms(listenAfter.ts - t)} ms after this connection reached it`] };
  }
  const closed = seq?.listenerClosed ?? null;
  const exited = seq?.exited ?? null;
  const est = c.establishedTs;
  // a listener that closed only when the process died (SIGKILL at the end of the grace period) did not
  // close before the rules changed: what the exit cut was in flight, not queued behind a closed listener
  const closedByExit = closed !== null && exited !== null && closed >= exited - 5e6;
  // the app had taken this connection: accept(2) of this peer, or it answered an earlier request on it
  const acc = (ctx.facts.accepts ?? []).find((a) => a.peer === c.client && a.peerPort === c.cport && a.ts <= t && (est === null || a.ts >= est - 1e6) && belongs(ctx.id, pod, a.pid, null));
  const acceptedAt = acc?.ts ?? c.answeredAt ?? c.dequeued?.at ?? null;
  const shutdown = Math.min(closed ?? Infinity, exited ?? Infinity);
  // a connection the app had taken is not an accept-queue reset
  if (est !== null && acceptedAt === null && closed !== null && !closedByExit && est < closed && t >= closed - 5e6) {
    const dClose = Math.abs(t - closed);
    const dExit = exited !== null ? Math.abs(t - exited) : Infinity;
    if (dClose <= dExit || exited === null) {
      return { cause: 'listener-closed', why: [`cause listener-closed: the connection completed its handshake at ${iso(est)} and sat in ${label}'s accept queue; the listener closed at ${iso(closed)} and the queued connection was reset ${ms(t - closed)} ms later`] };
    }
  }
  if (est !== null && exited !== null && est < exited && t >= exited - 5e6) {
    return { cause: 'killed-in-flight', why: [`cause killed-in-flight: connection open since ${iso(est)} when ${label}'s process exited at ${iso(exited)}${seq?.exitSignal ? ` (${seq.exitSignal})` : ''}; failure ${ms(t - exited)} ms after`] };
  }
  if (est !== null && acceptedAt !== null && est < shutdown && t >= shutdown - 5e6) {
    const how = acc ? `accepted it at ${iso(acc.ts)} (accept(2) [${acc.source}])`
      : c.answeredAt != null ? `had answered a request on it at ${iso(acceptedAt)}: a request on a reused connection`
      : `had taken it out of the accept queue: ${c.dequeued!.what}, and the queue is FIFO`;
    return { cause: 'killed-in-flight', why: [`cause killed-in-flight: ${label} ${how}, so it was not queued behind a closed listener; the connection was reset ${ms(t - shutdown)} ms after the process began shutting down (${closed !== null ? `listener closed ${iso(closed)}` : ''}${closed !== null && exited !== null ? ', ' : ''}${exited !== null ? `exited ${iso(exited)}${seq?.exitSignal ? ` (${seq.exitSignal})` : ''}` : ''})`] };
  }
  if (closed !== null && t >= closed - 5e6) {
    const rule = seq?.ruleRemoved ?? null;
    if (routed.remote) {
      const r = routed.node ? seq?.ruleRemovedByNode.get(routed.node) ?? null : null;
      return { cause: 'listener-closed', why: [`cause listener-closed: ${label}'s listener closed at ${iso(closed)}, ${ms(t - closed)} ms before this failure, while ${routed.node ?? 'a remote node'} still routed to it${r !== null ? ` (rule removed on ${routed.node} at ${iso(r)})` : routed.rulesRecorded ? '' : ' (that node\'s rules are not in this bundle)'}`] };
    }
    const byNode = routed.node && (ctx.nodes?.length ?? 0) > 1 ? seq?.ruleRemovedByNode.get(routed.node) : undefined;
    if (byNode !== undefined) {
      return { cause: 'listener-closed', why: [`cause listener-closed: ${label}'s listener closed at ${iso(closed)}, ${ms(t - closed)} ms before this failure, while ${routed.node} still routed to it${byNode !== null ? ` (rule removed on ${routed.node} at ${iso(byNode)})` : ` (no rule removal recorded on ${routed.node})`}`] };
    }
    return { cause: 'listener-closed', why: [`cause listener-closed: ${label}'s listener closed at ${iso(closed)}, ${ms(t - closed)} ms before this failure, while this node still routed to it${rule !== null ? ` (rule removed at ${iso(rule)})` : ' (no rule removal recorded)'}`] };
  }
  const missing: string[] = [];
  if (!seq || seq.listenerClosed === null) missing.push(`no listener-closed event for ${label}`);
  if (!listens.length) missing.push(`no listen event for ${label}`);
  if (exited === null) missing.push(`no process-exit for ${label}`);
  return { cause: 'unknown', why: [`cause unknown: ${missing.join('; ') || `${label} was listening and running at ${iso(t)}`}`] };
}

/**
 * Screening of failure candidates that are not traffic the rollout dropped:
 * - health checks: connections straight to a pod IP (not through a service VIP / DNAT) while the pod
 *   was not Ready and no EndpointSlice listed it as ready (kubelet readiness probes of a starting pod);
 * - kernel resets seen only by ebpf (tcp:tcp_send_reset) that other sources contradict or that cannot
 *   be a refused connection (a socketless reset while the pod's listener was open).
 * Everything screened out is counted and described, never silently dropped.
 */
import type { BundleReader } from '../bundle-reader.js';
import { iso, joinAddr, ms, splitAddr } from '../util.js';
import type { ResolveContext, ResolvedFailure } from './failures.js';
import { podLabel, type PodInfo } from './identity.js';
import { belongs } from './pods.js';

export interface Dismissed { f: ResolvedFailure; group: 'health-check' | 'reset-artifact'; why: string }

/** An RST seen only by the ebpf source (no packet, probe request or conntrack failure behind it). */
export function ebpfOnly(f: ResolvedFailure): boolean {
  return f.c.kinds.size === 1 && f.c.kinds.has('reset-sent');
}

/** What a reset seen only by tcp:tcp_send_reset proves, for the evidence of the ones kept. */
export const EBPF_ONLY_LIMITS = 'ebpf-only: tcp:tcp_send_reset proves that this host\'s kernel answered a segment for this pod ip:port with RST; '
  + 'without packets it cannot tell whether that segment opened a new connection (refused) or was a late segment of a connection that had already ended, '
  + 'and a reset sent without a socket carries no network namespace (another namespace with the same addresses would look the same)';

function readyAt(pod: PodInfo, ip: string, t: number, ctx: ResolveContext): boolean {
  if (pod.readyNs !== null && pod.readyNs <= t) return true;
  let ready = false;
  for (const s of ctx.facts.sliceChanges) {
    if (s.ts > t) break;
    if (s.ip !== ip) continue;
    ready = s.change !== 'removed' && s.ready === true;
  }
  return ready;
}

interface FlowPackets { n: number; serverData: boolean; fin: boolean; synAck: boolean }

export function screenFailures(failures: ResolvedFailure[], ctx: ResolveContext, reader: BundleReader | null): { kept: ResolvedFailure[]; dismissed: Dismissed[] } {
  const kept: ResolvedFailure[] = [];
  const dismissed: Dismissed[] = [];
  const hasPackets = !!reader && reader.has('packets') && reader.db.prepare('SELECT 1 FROM packets LIMIT 1').get() !== undefined;
  const hasCt = !!reader && reader.has('conntrack');
  const flowSt = hasPackets ? reader!.db.prepare(`SELECT count(*) AS n, max(CASE WHEN src = ? AND coalesce(payload_len, 0) > 0 THEN 1 ELSE 0 END) AS sd,
      max(CASE WHEN (tcp_flags & 1) != 0 THEN 1 ELSE 0 END) AS fin, max(CASE WHEN (tcp_flags & 18) = 18 THEN 1 ELSE 0 END) AS sa
    FROM packets WHERE ((src = ? AND sport = ? AND dst = ? AND dport = ?) OR (src = ? AND sport = ? AND dst = ? AND dport = ?)) AND ts_ns BETWEEN ? AND ?`) : null;
  // traffic between the same two addresses (not just the pod's): a bridge capture sees node<->pod
  // traffic but not frames bridged between two pods, so only the pair proves the path was captured
  const podTrafficSt = hasPackets ? reader!.db.prepare('SELECT count(*) AS n FROM packets WHERE ts_ns BETWEEN ? AND ? AND ((src = ? AND dst = ?) OR (src = ? AND dst = ?))') : null;
  const ctSt = hasCt ? reader!.db.prepare(`SELECT state, flags, type, ts_ns FROM conntrack WHERE orig_src = ? AND orig_sport = ? AND ts_ns BETWEEN ? AND ? ORDER BY ts_ns`) : null;
  // the kernel's word that a connection went straight to the pod: its original destination is the pod itself
  const ctDirectSt = hasCt ? reader!.db.prepare(`SELECT 1 FROM conntrack WHERE orig_src = ? AND orig_sport = ? AND orig_dst = ? AND orig_dport = ?
    AND ts_ns BETWEEN ? AND ? LIMIT 1`) : null;
  // whether this network namespace saw an address at all: conntrack tracks every flow in it (through a
  // service, forwarded from another node, or to a pod behind br_netfilter); only a complete record says so
  const ctComplete = hasCt && reader!.sources().some((x) => x.name === 'conntrack' && x.status === 'ok' && x.events > 0 && !x.dropped);
  const seenSt = ctComplete ? reader!.db.prepare(`SELECT 1 FROM conntrack WHERE ts_ns BETWEEN ? AND ? AND (orig_src = ? OR orig_dst = ? OR reply_src = ? OR reply_dst = ?) LIMIT 1`) : null;
  const ctAroundSt = ctComplete ? reader!.db.prepare('SELECT 1 FROM conntrack WHERE ts_ns BETWEEN ? AND ? LIMIT 1') : null;
  const pktSeenSt = hasPackets ? reader!.db.prepare('SELECT 1 FROM packets WHERE ts_ns BETWEEN ? AND ? AND (src = ? OR dst = ?) LIMIT 1') : null;
  for (const f of failures) {
    const pod = f.backend.podKey ? ctx.id.pods.get(f.backend.podKey) ?? null : null;
    const backend = f.backend.ip ? joinAddr(f.backend.ip, f.backend.port) : null;
    // 1. health checks: straight to the pod IP, not routed by any service rule, pod not ready
    // only what is proven a probe is dismissed: the kubelet probes from the node's own address (status.hostIP);
    // a connection straight to the pod from anywhere else arrived already DNATed by another node
    const direct = !f.c.probe && (f.service === null || f.service === backend) && !!f.routed?.hostSource;
    const fromNode = `from ${f.client.replace(/:\d+$/, '')}, the node's own address (the kubelet's probes)`;
    if (direct && pod && f.backend.ip && !readyAt(pod, f.backend.ip, f.at, ctx)) {
      dismissed.push({ f, group: 'health-check', why: `${f.client} -> ${backend} (${podLabel(pod)}) at ${iso(f.at)}: straight to the pod IP ${fromNode}, not through a service, while the pod was not Ready and no EndpointSlice listed it as ready` });
      continue;
    }
    // ... or while it was terminating (no longer a ready endpoint), when conntrack proves the connection was
    // not DNATed: the kubelet keeps probing a terminating pod, and those probes die with it. Terminating from
    // the deletion as received, or from its SIGTERM when that came first: the kubelet signals only after the
    // deletion, and a lagging watch received it late (real node, local-blackhole: 109 ms after the SIGTERM,
    // the kubelet's probe refused in between)
    const client = splitAddr(f.client);
    const sigterm = pod ? ctx.seqs.get(pod.key)?.sigterm ?? null : null;
    if (direct && pod && f.backend.ip && f.backend.port !== null && client && client.port !== null && ctDirectSt
      && pod.deletionSeenNs !== null && Math.min(pod.deletionSeenNs, sigterm ?? Infinity) <= f.at
      && ctDirectSt.get(client.ip, client.port, f.backend.ip, f.backend.port, f.at - 60e9, f.at + 5e9) !== undefined) {
      dismissed.push({ f, group: 'health-check', why: `${f.client} -> ${backend} (${podLabel(pod)}) at ${iso(f.at)}: straight to the pod IP ${fromNode} (conntrack: original destination is the pod, no DNAT), not through a service, while the pod was terminating` });
      continue;
    }
    if (!ebpfOnly(f)) {
      // a failure the packet scan did not flag itself (probe error, conntrack): say what the packets show
      const pktKinds = ['syn-rst', 'rst-before-response', 'fin-before-response', 'syn-timeout', 'syn-late-abandoned', 'icmp-unreachable'] as const;
      const cl = splitAddr(f.client);
      if (flowSt && !pktKinds.some((k) => f.c.kinds.has(k)) && cl && cl.port !== null && f.backend.ip && f.backend.port !== null) {
        const b = f.backend;
        const r = flowSt.get(b.ip, cl.ip, cl.port, b.ip, b.port, b.ip, b.port, cl.ip, cl.port, f.at - 60e9, f.at + 5e9) as { n: number; sd: number | null; fin: number | null; sa: number | null };
        if (r.n > 0) {
          f.evidence.push(`packets of this connection on the captured interface(s): ${r.n}${r.sa === 1 ? ', handshake completed' : ''}${r.sd === 1 ? `, ${b.ip} sent response bytes` : ', no response byte'}${r.fin === 1 ? ', FIN seen' : ''}`
            + (r.sd === 1 ? ': the backend answered, so the client\'s failure happened after the pod replied (lost or unacknowledged on the way back), not at the pod' : ''));
        }
      }
      kept.push(f);
      continue;
    }
    // 2. resets seen only by ebpf
    const cl = splitAddr(f.client);
    const view = f.c.views[0];
    const why = ebpfVerdict(f, ctx, cl, view, pod, { flowSt, podTrafficSt, ctSt, seenSt, pktSeenSt, ctAroundSt });
    if (why) { dismissed.push({ f, group: 'reset-artifact', why }); continue; }
    f.evidence.push(EBPF_ONLY_LIMITS + (hasPackets ? '' : ' (packets were not captured in this bundle)'));
    kept.push(f);
  }
  return { kept, dismissed };
}

interface Stmt { get(...a: unknown[]): unknown; all(...a: unknown[]): unknown[] }

function ebpfVerdict(f: ResolvedFailure, ctx: ResolveContext, cl: { ip: string; port: number | null } | null, view: { server: string; sport: number | null } | undefined,
  pod: PodInfo | null, st: { flowSt: Stmt | null; podTrafficSt: Stmt | null; ctSt: Stmt | null; seenSt: Stmt | null; pktSeenSt: Stmt | null; ctAroundSt: Stmt | null }): string | null {
  const t = f.at;
  const rst = `RST ${view ? joinAddr(view.server, view.sport) : '?'} -> ${f.client} at ${iso(t)}`;
  const reset = ctx.facts.resets.find((r) => r.ts === t && r.daddr === cl?.ip);
  // every network namespace's resets reach the tracepoint: one sent in a namespace the pod never used is
  // another namespace's, holding the same addresses (another node or lab on the same machine)
  if (pod && reset?.netns && pod.netns.size && !pod.netns.has(reset.netns)) {
    return `${rst}: sent in network namespace ${reset.netns}, not ${podLabel(pod)}'s (${[...pod.netns].join(', ')}): another namespace on this machine holds the same addresses`;
  }
  if (cl && cl.port !== null && view && view.sport !== null && st.flowSt && st.podTrafficSt) {
    const r = st.flowSt.get(view.server, cl.ip, cl.port, view.server, view.sport, view.server, view.sport, cl.ip, cl.port, t - 60e9, t + 5e9) as { n: number; sd: number | null; fin: number | null; sa: number | null };
    if (r.n > 0) {
      const p: FlowPackets = { n: r.n, serverData: r.sd === 1, fin: r.fin === 1, synAck: r.sa === 1 };
      return `${rst}: the packets show this connection (${p.n} packets${p.synAck ? ', handshake completed' : ''}${p.serverData ? ', response sent' : ''}${p.fin ? ', FIN' : ''}) and no failure on it; the reset answered a segment after the exchange`;
    }
    const around = st.podTrafficSt.get(t - 2e9, t + 2e9, view.server, cl.ip, cl.ip, view.server) as { n: number };
    if (around.n > 0) {
      return `${rst}: no packet of this connection crossed the captured interface(s), which carried ${around.n} packets between ${view.server} and ${cl.ip} within 2 s; so it did not travel this path (a socketless reset names no network namespace: another one with the same addresses looks alike)`;
    }
  }
  if (cl && cl.port !== null && st.ctSt) {
    const rows = st.ctSt.all(cl.ip, cl.port, t - 60e9, t + 5e9) as Array<{ state: string | null; flags: string | null; type: string; ts_ns: number }>;
    const answered = rows.find((x) => (x.state && x.state !== 'SYN_SENT' && x.state !== 'CLOSE') || /ASSURED/.test(x.flags ?? ''));
    if (answered) return `${rst}: conntrack shows this connection was answered (${answered.type} ${answered.state ?? ''} ${answered.flags ?? ''}`.trimEnd() + ` at ${iso(answered.ts_ns)}); the reset is a teardown artifact, not a refused connection`;
  }
  // a client this namespace never saw: the reset went out in another namespace with the same pod addresses
  // (two real-node labs or kind clusters on one host share 10.244.0.0/16; tcp_send_reset is host-wide)
  if (cl && st.seenSt && st.ctAroundSt?.get(t - 5e9, t + 5e9) !== undefined && st.seenSt.get(t - 60e9, t + 5e9, cl.ip, cl.ip, cl.ip, cl.ip) === undefined
    && !(st.pktSeenSt && st.pktSeenSt.get(t - 60e9, t + 5e9, cl.ip, cl.ip) !== undefined)) {
    return `${rst}: ${cl.ip} appears nowhere in this network namespace's conntrack (which recorded flows around it and dropped no event)${st.pktSeenSt ? ' nor in its capture' : ''} within 60 s; every connection that reaches a pod here is tracked, so the reset was sent in another network namespace with the same addresses (a socketless reset names none)`;
  }
  if (pod && reset?.reason === 'NO_SOCKET') {
    const listens = ctx.facts.listens.filter((l) => belongs(ctx.id, pod, l.pid, l.netns, l.podUid)
      && (l.port === null || view?.sport == null || l.port === view.sport) && l.ts <= t);
    const seq = ctx.seqs.get(pod.key);
    const closed = seq?.listenerClosed ?? null;
    const exited = seq?.exited ?? null;
    if (listens.length && (closed === null || closed > t) && (exited === null || exited > t)) {
      const l = listens[listens.length - 1];
      return `${rst}: reason NO_SOCKET while ${podLabel(pod)} listened on ${l.addr}:${l.port ?? '?'} (since ${iso(l.ts)}${closed !== null ? `, until ${iso(closed)}, ${ms(closed - t)} ms later` : ''}); a new connection would have found the listener, so the segment belonged to a connection that no longer existed`;
    }
  }
  return null;
}

/** For `warnings`: per group one summary line; each connection goes to `ignored` (see dismissedItems). */
export function describeDismissed(d: Dismissed[]): string[] {
  const out: string[] = [];
  const groups: Array<[Dismissed['group'], string]> = [
    ['health-check', 'connection(s) straight to not-ready pods (health checks such as kubelet readiness probes) ignored, not failures of the rollout'],
    ['reset-artifact', 'kernel reset(s) seen only by ebpf ignored, not failed connections'],
  ];
  for (const [g, text] of groups) {
    const list = d.filter((x) => x.group === g);
    if (!list.length) continue;
    out.push(`${list.length} ${text}`);
  }
  return out;
}

/** Every dismissed connection with its reason, for the analysis' `ignored` list. */
export function dismissedItems(d: Dismissed[]): Array<{ group: string; why: string }> {
  return d.map((x) => ({ group: x.group, why: x.why }));
}

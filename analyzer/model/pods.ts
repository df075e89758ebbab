/**
 * Each terminated pod's sequence: deletion requested → SIGTERM → listener closed → exit, and
 * EndpointSlice ready→terminating→removed → this node's rule removed. Pure: identity + facts in.
 */
import { nsFromIso } from '../../schemas/analysis.js';
import type { Verdict } from '../../schemas/analysis.js';
import { iso, ms, sane } from '../util.js';
import type { Facts, ListenEv, PathRuleEv, RuleEv, SignalEv } from './facts.js';
import { podLabel, type Identity, type PodInfo } from './identity.js';

export interface PodSequence {
  pod: PodInfo;
  ip: string | null;
  ports: number[];
  deletion: number | null;
  deletionRequested: number | null;
  sigterm: number | null;
  listenerClosed: number | null;
  listenerCloseEv: ListenEv | null;
  exited: number | null;
  exitSignal: string | null;
  /** SIGKILL to the pod's process (signal event, else its exit by SIGKILL) */
  sigkill: number | null;
  endpointTerminating: number | null;
  endpointRemoved: number | null;
  ruleRemoved: number | null;
  ruleRemovedByNode: Map<string, number | null>;
  firstListen: number | null;
  /** per path (cluster IP, NodePort, LB/external IP): when it stopped routing to this pod on this node */
  routes: PodRoute[];
  exposureNs: number | null;
  verdict: Verdict;
  evidence: string[];
  failedConnections: number;
}

export interface PodRoute { path: string; addr: string; policy: string; service: string; node: string | null; stoppedAt: number | null; fallback: boolean }

const KERNEL_SOURCES = new Set(['ebpf']);
function prefKernel<T extends { source: string; ts: number }>(list: T[]): T | null {
  if (!list.length) return null;
  const k = list.filter((x) => KERNEL_SOURCES.has(x.source));
  return (k.length ? k : list).reduce((a, b) => (b.ts < a.ts ? b : a));
}

/** Whether a process-side event (by pod uid, pid or network namespace) belongs to this pod. */
export function belongs(id: Identity, pod: PodInfo, pid: number | null, netns: number | null, podUid?: string | null): boolean {
  if (podUid && pod.uid === podUid) return true;
  if (pid !== null && pod.pids.has(pid)) return true;
  if (netns !== null && pod.netns.has(netns)) return true;
  if (pid !== null && id.pidPod.get(pid) === pod.key) return true;
  return false;
}

/** which sources can see what: a change before the source was live is a blind spot, not an absence */
const SEES_RULES = ['nftables'];
const SEES_LISTENERS = ['strace', 'ebpf'];

/**
 * Evidence naming a blind spot: the sources that could see `what` were all live only after `from`
 * (termination began), so it may have happened before they could see it. null when one was live in time
 * or the bundle does not say when its sources went live (import, older recorders).
 */
export function blindSpot(liveNs: Record<string, number> | null, sources: string[], from: number | null, what: string): string | null {
  if (!liveNs || from === null) return null;
  const live = sources.filter((s) => typeof liveNs[s] === 'number');
  if (!live.length || live.some((s) => liveNs[s]! <= from)) return null;
  const first = live.reduce((a, b) => (liveNs[a]! <= liveNs[b]! ? a : b));
  return `blind spot: ${what} may have happened before ${live.join('/')} was live (from ${iso(liveNs[first]!)}, ${ms(liveNs[first]! - from)} ms after termination began at ${iso(from)}); the recording cannot tell, so the verdict stays unknown for this reason`;
}

export function podSequences(id: Identity, f: Facts, startNs: number, nodeName: string | null, liveNs: Record<string, number> | null = null): PodSequence[] {
  const out: PodSequence[] = [];
  for (const pod of id.pods.values()) {
    const ev: string[] = [];
    const ips = pod.ips;
    const ip = ips[0] ?? null;
    const tenureFrom = pod.createdNs ?? -Infinity;
    const inTenure = (t: number) => t >= tenureFrom - 1e9 && (pod.deletedNs === null || t <= pod.deletedNs + 60e9);
    // ---- deletion
    const deletion = pod.deletionSeenNs ?? f.podTerminating.find((e) => e.a.uid === pod.uid || (e.a.ip && ips.includes(String(e.a.ip))))?.ts ?? null;
    let deletionRequested: number | null = null;
    if (pod.deletionSeenNs !== null) {
      ev.push(`deletion: watch event with metadata.deletionTimestamp=${pod.deletionTimestamp} received at ${iso(pod.deletionSeenNs)} (kube, receipt-stamped)`);
      const dts = pod.deletionTimestamp ? sane(nsFromIso(pod.deletionTimestamp)) : null;
      if (dts !== null && pod.graceSeconds !== null) {
        deletionRequested = dts - pod.graceSeconds * 1e9;
        ev.push(`deletion requested per API server clock: deletionTimestamp - grace ${pod.graceSeconds}s = ${iso(deletionRequested)}`);
      }
    } else if (deletion !== null) ev.push(`deletion: pod-terminating event at ${iso(deletion)}`);
    // ---- process side
    const mine = <T extends { pid: number | null; netns: number | null }>(l: T[]) => l.filter((x) => belongs(id, pod, x.pid, x.netns));
    const sigs = mine(f.signals).filter((s) => (s.signame === 'SIGTERM') && (deletion === null || s.ts >= deletion - 2e9));
    const sigterm = pickSignal(sigs, ev);
    const portsFromRules = new Set<number>();
    for (const r of f.rules) if (ips.includes(r.ip) && r.port !== null) portsFromRules.add(r.port);
    for (const c of f.sliceChanges) if (ips.includes(c.ip)) for (const p of c.ports) portsFromRules.add(p);
    const ports = [...portsFromRules];
    const closesAll = f.closes.filter((c) => belongs(id, pod, c.pid, c.netns, c.podUid) || (c.addr !== '0.0.0.0' && c.addr !== '::' && ips.includes(c.addr) && inTenure(c.ts)));
    const closesPort = ports.length ? closesAll.filter((c) => c.port !== null && ports.includes(c.port)) : closesAll;
    const closes = (closesPort.length ? closesPort : closesAll).filter((c) => sigterm === null || c.ts >= sigterm - 5e9);
    const firstBySource = new Map<string, ListenEv>();
    for (const c of closes) if (!firstBySource.has(c.source) || firstBySource.get(c.source)!.ts > c.ts) firstBySource.set(c.source, c);
    const chosenClose = prefKernel([...firstBySource.values()]);
    for (const c of firstBySource.values()) {
      ev.push(`listener ${c.addr}:${c.port ?? '?'} closed (${c.how}) pid ${c.pid ?? '?'} at ${iso(c.ts)} [${c.source}]${c === chosenClose && firstBySource.size > 1 ? ' — chosen: kernel-stamped' : ''}`);
    }
    const listens = f.listens.filter((l) => belongs(id, pod, l.pid, l.netns, l.podUid)).filter((l) => ports.length === 0 || l.port === null || ports.includes(l.port));
    const firstListen = listens.length ? Math.min(...listens.map((l) => l.ts)) : null;
    const exitsMine = mine(f.exits.map((x) => ({ ...x, netns: null as number | null })));
    let exitEv = chosenClose?.pid != null ? exitsMine.find((x) => x.pid === chosenClose.pid) : undefined;
    if (!exitEv && exitsMine.length) exitEv = exitsMine.reduce((a, b) => (b.ts > a.ts ? b : a));
    if (exitEv) ev.push(`process ${exitEv.pid} exited at ${iso(exitEv.ts)}${exitEv.signal ? ` killed by ${exitEv.signal}` : exitEv.code !== null ? ` code ${exitEv.code}` : ''} [${exitEv.source}]`);
    const killed = mine(f.signals).find((s) => s.signame === 'SIGKILL');
    const exitSignal = exitEv?.signal ?? (killed ? 'SIGKILL' : null);
    if (killed && !exitEv?.signal) ev.push(`SIGKILL to pid ${killed.pid} at ${iso(killed.ts)} [${killed.source}]`);
    // ---- endpoint slice (as received)
    const sl = f.sliceChanges.filter((c) => ips.includes(c.ip) && (c.podUid === null || pod.uid === null || c.podUid === pod.uid) && inTenure(c.ts));
    const termC = sl.find((c) => c.terminating === true || (c.ready === false && deletion !== null && c.ts >= deletion - 1e9));
    const remC = sl.find((c) => c.change === 'removed' && (deletion === null || c.ts >= deletion - 1e9));
    if (termC) ev.push(`EndpointSlice ${termC.slice}: ${termC.ip} ${termC.terminating ? 'terminating' : 'not ready'} received at ${iso(termC.ts)}`);
    if (remC) ev.push(`EndpointSlice ${remC.slice}: ${remC.ip} removed, received at ${iso(remC.ts)}`);
    // ---- this node's rules
    const termStart = minOf([deletion, sigterm, termC?.ts ?? null, chosenClose?.ts ?? null]);
    const ruleRes = ruleRemoval(f.rules, ips, ports, termStart, nodeName, ev);
    const routes = pathStops(f.pathRules ?? [], ips, ports, termStart, termC?.ts ?? null, ev);
    // ---- verdict
    let listenerClosed = chosenClose?.ts ?? null;
    if (listenerClosed === null && exitEv) {
      listenerClosed = exitEv.ts;
      ev.push(`no listener-closed event: the listener closed at the latest when the process exited (${iso(exitEv.ts)})`);
    }
    const terminated = deletion !== null || sigterm !== null || chosenClose !== null || ruleRes.at !== null || exitEv !== undefined || remC !== undefined;
    if (!terminated) continue;
    let verdict: Verdict = 'unknown';
    let exposureNs: number | null = null;
    if (listenerClosed !== null && ruleRes.at !== null) {
      exposureNs = ruleRes.at - listenerClosed;
      verdict = exposureNs > 0 ? 'listener-closed-before-rule-removed' : 'safe';
      ev.push(`exposure = rule removed ${iso(ruleRes.at)} - listener closed ${iso(listenerClosed)} = ${ms(exposureNs)} ms`);
    } else if (listenerClosed === null && ruleRes.at !== null && (pod.deletedNs !== null || remC)) {
      ev.push('verdict unknown: the bundle has no listener-closed or process-exit event for this pod (strace/ebpf source missing, or its PIDs could not be tied to the pod)');
    } else if (listenerClosed === null) {
      ev.push('verdict unknown: no listener-closed or process-exit event for this pod in the bundle');
    }
    // ---- a process that ignored SIGTERM: neither exited nor closed its listener before the SIGKILL
    const sigkill = killed?.ts ?? (exitEv?.signal === 'SIGKILL' ? exitEv.ts : null);
    if (sigterm !== null && sigkill !== null && sigkill > sigterm && exitSignal === 'SIGKILL'
      && (chosenClose === null || chosenClose.ts >= sigkill - 5e6) && verdict !== 'listener-closed-before-rule-removed') {
      const graceS = pod.graceSeconds;
      ev.push(`ignored SIGTERM: the process neither exited nor closed its listener in the ${ms(sigkill - sigterm)} ms between SIGTERM (${iso(sigterm)}) and SIGKILL (${iso(sigkill)})${graceS !== null ? `, the end of its ${graceS}s grace period` : ''}: the app ignores SIGTERM or drains longer than the grace period; connections open at the SIGKILL were cut`);
      verdict = 'ignored-sigterm';
    }
    if (ruleRes.at === null) {
      const blind = blindSpot(liveNs, SEES_RULES, termStart, `the removal of ${ips.join(', ') || 'its IP'}'s endpoint rules`);
      if (blind) ev.push(blind);
    }
    if (listenerClosed === null) {
      const blind = blindSpot(liveNs, SEES_LISTENERS, termStart, 'the listener close');
      if (blind) ev.push(blind);
    }
    if (ruleRes.at === null) ev.push(`${verdict === 'unknown' ? 'verdict unknown' : 'exposure unknown'}: no endpoint-rule-removed event for ${ips.join(', ') || 'its IP'} after termination began (nftables source missing, or recording ended first)`);
    if (verdict === 'unknown' && listenerClosed !== null && ruleRes.at === null) {
      // the rule outlived the recording: still exposed at the end if the listener closed
    }
    out.push({
      pod, ip, ports, deletion, deletionRequested, sigterm, listenerClosed, listenerCloseEv: chosenClose, exited: exitEv?.ts ?? null, exitSignal, sigkill: sigkill ?? null,
      endpointTerminating: termC?.ts ?? null, endpointRemoved: remC?.ts ?? null, ruleRemoved: ruleRes.at, ruleRemovedByNode: ruleRes.byNode,
      firstListen, routes, exposureNs, verdict, evidence: ev, failedConnections: 0,
    });
  }
  out.sort((a, b) => (minOf([a.deletion, a.sigterm, a.listenerClosed, a.ruleRemoved]) ?? 0) - (minOf([b.deletion, b.sigterm, b.listenerClosed, b.ruleRemoved]) ?? 0));
  void startNs;
  return out;
}

function minOf(xs: Array<number | null>): number | null {
  const v = xs.filter((x): x is number => x !== null);
  return v.length ? Math.min(...v) : null;
}

function pickSignal(sigs: SignalEv[], ev: string[]): number | null {
  if (!sigs.length) return null;
  const bySource = new Map<string, SignalEv>();
  for (const s of sigs) if (!bySource.has(s.source) || bySource.get(s.source)!.ts > s.ts) bySource.set(s.source, s);
  const chosen = prefKernel([...bySource.values()])!;
  for (const s of bySource.values()) {
    ev.push(`SIGTERM ${s.phase ?? ''} to pid ${s.pid ?? '?'}${s.sender ? ` from ${s.sender}` : ''} at ${iso(s.ts)} [${s.source}]${s === chosen && bySource.size > 1 ? ' — chosen: kernel-stamped' : ''}`.replace('  ', ' '));
  }
  return chosen.ts;
}

/**
 * The instant this node stopped routing to the endpoint: the first endpoint-rule-removed for one of its
 * ip:port after the last re-add before termination began — not a stale chain deleted later.
 */
function ruleRemoval(rules: RuleEv[], ips: string[], ports: number[], termStart: number | null, nodeName: string | null, ev: string[]): { at: number | null; byNode: Map<string, number | null> } {
  const byNode = new Map<string, number | null>();
  const mine = rules.filter((r) => ips.includes(r.ip) && (ports.length === 0 || r.port === null || ports.includes(r.port)));
  const nodes = new Set(mine.map((r) => r.node ?? nodeName ?? ''));
  let main: number | null = null;
  for (const node of nodes) {
    const list = mine.filter((r) => (r.node ?? nodeName ?? '') === node);
    let lower = -Infinity;
    if (termStart !== null) for (const r of list) if (r.added && r.ts <= termStart && r.ts > lower) lower = r.ts;
    const removes = list.filter((r) => !r.added && r.ts >= lower && (termStart === null || r.ts >= termStart - 30e9));
    // stop at a re-add after termination (a new pod got the IP)
    const readd = list.find((r) => r.added && termStart !== null && r.ts > termStart);
    const valid = removes.filter((r) => !readd || r.ts <= readd.ts);
    if (!valid.length) { byNode.set(node, null); continue; }
    const first = valid.reduce((a, b) => (b.ts < a.ts ? b : a));
    byNode.set(node, first.ts);
    ev.push(`rule removed${node ? ` on ${node}` : ''}: ${first.ip}:${first.port ?? '?'} from ${first.service} (${first.mode}${first.chain ? `, ${first.chain}` : ''}) at ${iso(first.ts)} [${first.source}, ${first.clock ?? 'receipt'}-stamped]`);
    const later = valid.filter((r) => r !== first);
    if (later.length) ev.push(`${later.length} later removal(s) of the same endpoint (other services or stale chains) ignored: ${later.slice(0, 3).map((r) => `${r.service} ${iso(r.ts)}`).join('; ')}`);
    if (node === (nodeName ?? '') || nodes.size === 1) main = main === null ? first.ts : Math.min(main, first.ts);
  }
  if (main === null && byNode.size) {
    const vals = [...byNode.values()].filter((x): x is number => x !== null);
    if (vals.length) main = Math.min(...vals);
  }
  return { at: main, byNode };
}

/**
 * When each path (cluster IP, NodePort, LB/external IP) stopped routing to the pod, per node: the first
 * path-rule-removed after the last re-add before termination began. A Local path that kept the pod after
 * the cluster IP path dropped it is kube-proxy's terminating fallback (ProxyTerminatingEndpoints: the node's
 * only local endpoint, serving and terminating, stays in use for external traffic).
 */
function pathStops(rules: PathRuleEv[], ips: string[], ports: number[], termStart: number | null, terminatingAt: number | null, ev: string[]): PodRoute[] {
  const mine = rules.filter((r) => ips.includes(r.ip) && (ports.length === 0 || r.port === null || ports.includes(r.port)));
  const groups = new Map<string, PathRuleEv[]>();
  for (const r of mine) {
    const k = `${r.path}|${r.addr}|${r.service}|${r.node ?? ''}`;
    const g = groups.get(k);
    if (g) g.push(r); else groups.set(k, [r]);
  }
  const out: PodRoute[] = [];
  for (const list of groups.values()) {
    const r0 = list[0]!;
    let lower = -Infinity;
    if (termStart !== null) for (const r of list) if (r.added && r.ts <= termStart && r.ts > lower) lower = r.ts;
    const readd = termStart === null ? undefined : list.find((r) => r.added && r.ts > termStart);
    const stop = list.filter((r) => !r.added && r.ts >= lower && (termStart === null || r.ts >= termStart - 30e9) && (!readd || r.ts <= readd.ts))
      .reduce<PathRuleEv | null>((a, b) => (!a || b.ts < a.ts ? b : a), null);
    if (!stop && termStart === null) continue;
    out.push({ path: r0.path, addr: r0.addr, policy: r0.policy, service: r0.service, node: r0.node, stoppedAt: stop?.ts ?? null, fallback: false });
  }
  out.sort((a, b) => (a.stoppedAt ?? Infinity) - (b.stoppedAt ?? Infinity) || a.path.localeCompare(b.path));
  for (const r of out) {
    ev.push(`${r.path} path ${r.addr} (${r.policy}${r.node ? `, ${r.node}` : ''}) ${r.stoppedAt !== null ? `stopped routing to it at ${iso(r.stoppedAt)}` : 'still routed to it when the recording ended'}`);
  }
  const clusterStop = out.filter((r) => r.path === 'cluster-ip' && r.stoppedAt !== null).map((r) => r.stoppedAt!).sort((a, b) => a - b)[0];
  if (clusterStop !== undefined) {
    for (const r of out) {
      if (r.path === 'cluster-ip' || r.policy !== 'Local' || (r.stoppedAt !== null && r.stoppedAt <= clusterStop)) continue;
      r.fallback = true;
      ev.push(`terminating fallback: the ${r.path} path ${r.addr} (externalTrafficPolicy: Local) kept routing to this pod ${r.stoppedAt !== null ? `${ms(r.stoppedAt - clusterStop)} ms` : 'until the end of the recording'} after the cluster IP path dropped it${terminatingAt !== null ? ` (endpoint terminating since ${iso(terminatingAt)})` : ''}: with no ready local endpoint kube-proxy keeps serving+terminating ones for external traffic (ProxyTerminatingEndpoints)`);
    }
  }
  return out;
}

export function podName(s: PodSequence): string { return podLabel(s.pod); }

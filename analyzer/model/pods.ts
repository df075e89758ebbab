/**
 * Each terminated pod's sequence: deletion requested → SIGTERM → listener closed → exit, and
 * EndpointSlice ready→terminating→removed → this node's rule removed. Pure: identity + facts in.
 */
import { nsFromIso } from '../../schemas/analysis.js';
import type { Verdict } from '../../schemas/analysis.js';
import { iso, ms, sane } from '../util.js';
import type { AttachEv, Facts, ListenEv, PathRuleEv, RuleEv, SignalEv } from './facts.js';
import type { SliceChange } from './slices.js';
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
  /** where the propagation (→ rule removal) is measured from: the deletion, else SIGTERM (see inconsistencies) */
  propagationStart: number | null;
  /** receipt-stamped vs kernel-stamped instants in an impossible order, with their size (for warnings) */
  inconsistencies: string[];
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
    // an address is this pod's only from its tenure's start to the next holder's: IP reuse never mixes two pods
    const ipTenure = new Map(ips.map((x) => [x, id.tenure(pod.key, x)]));
    const ipHeld = (x: string, t: number) => { const w = ipTenure.get(x); return !!w && t >= w.from && t < w.until; };
    const inTenure = (t: number) => t >= tenureFrom - 1e9 && (pod.deletedNs === null || t <= pod.deletedNs + 60e9);
    const rulesMine = f.rules.filter((r) => ipHeld(r.ip, r.ts));
    const pathRulesMine = (f.pathRules ?? []).filter((r) => ipHeld(r.ip, r.ts));
    // ---- deletion
    const deletion = pod.deletionSeenNs ?? f.podTerminating.find((e) => e.a.uid === pod.uid || (e.a.ip && ips.includes(String(e.a.ip)) && ipHeld(String(e.a.ip), e.ts)))?.ts ?? null;
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
    const mySignals = f.signals.filter((s) => belongs(id, pod, s.pid, s.netns, s.podUid));
    // SIGTERM follows the deletion; a kernel-stamped SIGTERM before a receipt-stamped deletion means the
    // receipt came late (watch delivery, clock): such a SIGTERM is still this deletion's, up to 30 s before it
    const termSigs = mySignals.filter((s) => s.signame === 'SIGTERM');
    const sigsAfter = termSigs.filter((s) => deletion === null || s.ts >= deletion - 2e9);
    const sigs = sigsAfter.length ? sigsAfter : termSigs.filter((s) => deletion !== null && s.ts >= deletion - 30e9);
    const sigterm = pickSignal(sigs, ev);
    const portsFromRules = new Set<number>();
    for (const r of rulesMine) if (r.port !== null) portsFromRules.add(r.port);
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
    // the SIGKILL that counts is the one to the process that held the listener (or exited last): runc also
    // SIGKILLs what is left in the container (a preStop exec's sleep) after the main process exited normally
    const kills = mySignals.filter((s) => s.signame === 'SIGKILL');
    const keyPid = chosenClose?.pid ?? exitEv?.pid ?? null;
    const killed = keyPid !== null ? kills.find((s) => s.pid === keyPid) : kills[0];
    const exitedNormally = !!exitEv && !exitEv.signal && exitEv.code !== null && (keyPid === null || exitEv.pid === keyPid);
    const exitSignal = exitEv?.signal ?? (killed && !exitedNormally ? 'SIGKILL' : null);
    if (killed && !exitEv?.signal) ev.push(`SIGKILL to pid ${killed.pid} at ${iso(killed.ts)} [${killed.source}]`);
    // ---- endpoint slice (as received)
    const sl = f.sliceChanges.filter((c) => ips.includes(c.ip) && (c.podUid === null || pod.uid === null || c.podUid === pod.uid) && inTenure(c.ts));
    const termC = sl.find((c) => c.terminating === true || (c.ready === false && deletion !== null && c.ts >= deletion - 1e9));
    const remC = sl.find((c) => c.change === 'removed' && (deletion === null || c.ts >= deletion - 1e9));
    if (termC) ev.push(`EndpointSlice ${termC.slice}: ${termC.ip} ${termC.terminating ? 'terminating' : 'not ready'} received at ${iso(termC.ts)}`);
    if (remC) ev.push(`EndpointSlice ${remC.slice}: ${remC.ip} removed, received at ${iso(remC.ts)}`);
    // ---- this node's rules
    const termStart = minOf([deletion, sigterm, termC?.ts ?? null, chosenClose?.ts ?? null]);
    const ruleRes = ruleRemoval(rulesMine, ips, ports, termStart, nodeName, ev);
    const routes = pathStops(pathRulesMine, ips, ports, termStart, termC?.ts ?? null, ev, termC ? (r) => onlyServingTerminating(f.sliceChanges, termC, ips, r) : undefined,
      termC ? (r) => fallbackBeforeReceipt(sl, termC, r, termStart, f.server ?? null) : undefined);
    // ---- receipt-stamped (kube) vs kernel-stamped (signals) order: the kubelet sends SIGTERM after the deletion
    const inconsistencies: string[] = [];
    let propagationStart = deletion ?? sigterm;
    if (deletion !== null && sigterm !== null && deletion > sigterm + 1e6) {
      const d = deletion - sigterm;
      inconsistencies.push(`deletion of ${podLabel(pod)} received ${ms(d)} ms after its SIGTERM (receipt-stamped kube event vs kernel-stamped signal): the kube source's stamps are at least ${ms(d)} ms late (watch delivery or clock skew)`);
      ev.push(`inconsistent order: the deletion was received ${ms(d)} ms after SIGTERM, which the kubelet sends only after it; propagation is measured from SIGTERM instead (a lower bound of the true propagation)`);
      propagationStart = sigterm;
    }
    if (propagationStart !== null) {
      for (const [node, t] of ruleRes.byNode) {
        if (t !== null && t < propagationStart - 1e6) {
          inconsistencies.push(`${podLabel(pod)}: rule removed${node ? ` on ${node}` : ''} ${ms(propagationStart - t)} ms before the deletion/SIGTERM it follows: negative propagation, not used for the recommendation`);
          ev.push(`inconsistent order: rule removal${node ? ` on ${node}` : ''} at ${iso(t)} precedes the start of termination (${iso(propagationStart)}) by ${ms(propagationStart - t)} ms; not used for the recommendation`);
        }
      }
    }
    // ---- verdict
    let listenerClosed = chosenClose?.ts ?? null;
    if (listenerClosed === null && exitEv) {
      listenerClosed = exitEv.ts;
      ev.push(`no listener-closed event: the listener closed at the latest when the process exited (${iso(exitEv.ts)})`);
    }
    const terminated = deletion !== null || sigterm !== null || chosenClose !== null || ruleRes.at !== null || exitEv !== undefined || remC !== undefined;
    if (!terminated) continue;
    ev.push(...straceCoverage(f, f.attaches.filter((a) => a.source === 'strace' && belongs(id, pod, a.pid, a.netns, a.podUid)), [
      { what: 'SIGTERM', seen: sigs },
      { what: 'listener close', seen: closes },
      { what: 'exit', seen: exitEv ? exitsMine.filter((x) => x.pid === exitEv!.pid) : [] },
    ]));
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
    if (ruleRes.at === null && ruleRes.open) ev.push(`${verdict === 'unknown' ? 'verdict unknown' : 'exposure unknown'}: a service still routed to it when the recording ended, so the instant it stopped being routed is not in the bundle`);
    else if (ruleRes.at === null) ev.push(`${verdict === 'unknown' ? 'verdict unknown' : 'exposure unknown'}: no endpoint-rule-removed event for ${ips.join(', ') || 'its IP'} after termination began (nftables source missing, or recording ended first)`);
    if (verdict === 'unknown' && listenerClosed !== null && ruleRes.at === null) {
      // the rule outlived the recording: still exposed at the end if the listener closed
    }
    out.push({
      pod, ip, ports, deletion, deletionRequested, sigterm, listenerClosed, listenerCloseEv: chosenClose, exited: exitEv?.ts ?? null, exitSignal, sigkill: sigkill ?? null,
      endpointTerminating: termC?.ts ?? null, endpointRemoved: remC?.ts ?? null, ruleRemoved: ruleRes.at, ruleRemovedByNode: ruleRes.byNode,
      firstListen, routes, exposureNs, propagationStart, inconsistencies, verdict, evidence: ev, failedConnections: 0,
    });
  }
  out.sort((a, b) => (minOf([a.deletion, a.sigterm, a.listenerClosed, a.ruleRemoved]) ?? 0) - (minOf([b.deletion, b.sigterm, b.listenerClosed, b.ruleRemoved]) ?? 0));
  void startNs;
  return out;
}

const REASON_TEXT: Record<string, string> = {
  all: 'from the start (--strace all)',
  'pod-terminating': 'when the kube source saw its deletionTimestamp',
  signal: 'when ebpf saw a SIGTERM generated to it',
};

/**
 * What strace could and could not see of this pod (issue 14): in lazy mode it attaches only once the
 * pod's termination began, so a fact before its attach comes from ebpf alone, and a fact only strace
 * saw came from a tracer attached late. Said, never guessed. Nothing for bundles without strace info.
 */
export function straceCoverage(f: Facts, attaches: AttachEv[], facts: Array<{ what: string; seen: Array<{ ts: number; source: string }> }>): string[] {
  const mode = f.straceMode;
  // bundles from before issue 14 (no mode anywhere): strace attached from the start, nothing to say
  if (!mode && !attaches.some((a) => a.mode)) return [];
  if (!attaches.length) {
    if (!mode || mode.mode === 'off') return [];
    const ran = facts.filter((x) => x.seen.length).map((x) => x.what);
    return [`strace (mode ${mode.mode}) never attached to this pod's processes${ran.length ? `: ${ran.join(', ')} from ebpf only` : ''}`];
  }
  const earliestOf = (l: AttachEv[]) => l.reduce((a, b) => (b.ts < a.ts ? b : a));
  const confirmed = attaches.filter((a) => a.confirmed !== false);
  const why = (a: AttachEv) => (a.mode ? ` (mode ${a.mode}${a.reason ? `, ${REASON_TEXT[a.reason] ?? a.reason}` : ''})` : '');
  if (!confirmed.length) {
    // strace was asked but the process was gone (or going) before ptrace could seize it
    const a = earliestOf(attaches);
    const ran = facts.filter((x) => x.seen.length).map((x) => x.what);
    return [`strace could not attach to pid ${a.pid ?? '?'}${why(a)}: asked at ${iso(a.ts)}, strace said: ${a.error ?? 'nothing'}${ran.length ? `; ${ran.join(', ')} from ebpf only` : ''}`];
  }
  const first = earliestOf(confirmed);
  const out = [`strace attached to pid ${first.pid ?? '?'} at ${iso(first.ts)}${why(first)}`];
  for (const fact of facts) {
    const strace = fact.seen.filter((x) => x.source === 'strace');
    const other = fact.seen.filter((x) => x.source !== 'strace');
    const earliest = fact.seen.length ? Math.min(...fact.seen.map((x) => x.ts)) : null;
    if (earliest === null) {
      out.push(`${fact.what}: recorded by no tracer (it did not happen while recording, or ebpf lost it${mode?.mode === 'lazy' ? '; strace was attached only from the time above' : ''})`);
    } else if (!strace.length && other.length && earliest < first.ts) {
      out.push(`${fact.what} at ${iso(earliest)} [${[...new Set(other.map((x) => x.source))].join(', ')}] only: before strace attached (${ms(first.ts - earliest)} ms later), strace could not see it`);
    } else if (strace.length && !other.length) {
      out.push(`${fact.what} at ${iso(Math.min(...strace.map((x) => x.ts)))} seen only by strace, attached ${first.reason === 'all' ? 'from the start' : `late, at ${iso(first.ts)}`}; ebpf has no record of it`);
    }
  }
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
 * The instant each node stopped routing to the endpoint, and the instant the endpoint stopped being
 * routed at all. Per node and per service (keyed by its VIP: a stale chain of the same service is not
 * another service), the first endpoint-rule-removed for one of its ip:port after the last re-add before
 * termination began; a node stops routing to the pod when its last service does; the endpoint is
 * unreachable once every node recorded has stopped (the latest of them, whatever order bundles were
 * merged in). A service or node that still routed to it when the recording ended leaves it null.
 */
function ruleRemoval(rules: RuleEv[], ips: string[], ports: number[], termStart: number | null, nodeName: string | null, ev: string[]): { at: number | null; byNode: Map<string, number | null>; open: boolean } {
  let stillOpen = false;
  const byNode = new Map<string, number | null>();
  const mine = rules.filter((r) => ips.includes(r.ip) && (ports.length === 0 || r.port === null || ports.includes(r.port)));
  const nodes = [...new Set(mine.map((r) => r.node ?? nodeName ?? ''))].sort();
  for (const node of nodes) {
    const onNode = mine.filter((r) => (r.node ?? nodeName ?? '') === node);
    const groups = new Map<string, RuleEv[]>();
    for (const r of onNode) { const k = r.vip ?? r.service; const g = groups.get(k); if (g) g.push(r); else groups.set(k, [r]); }
    const stops: Array<{ key: string; first: RuleEv | null; held: boolean }> = [];
    for (const [key, list] of groups) {
      let lower = -Infinity;
      if (termStart !== null) for (const r of list) if (r.added && r.ts <= termStart && r.ts > lower) lower = r.ts;
      const removes = list.filter((r) => !r.added && r.ts >= lower && (termStart === null || r.ts >= termStart - 30e9));
      // stop at a re-add after termination (a new pod got the IP)
      const readd = list.find((r) => r.added && termStart !== null && r.ts > termStart);
      const valid = removes.filter((r) => !readd || r.ts <= readd.ts);
      const first = valid.length ? valid.reduce((a, b) => (b.ts < a.ts ? b : a)) : null;
      if (first) {
        ev.push(`rule removed${node ? ` on ${node}` : ''}: ${first.ip}:${first.port ?? '?'} from ${first.service} (${first.mode}${first.chain ? `, ${first.chain}` : ''}) at ${iso(first.ts)} [${first.source}, ${first.clock ?? 'receipt'}-stamped]`);
        const later = valid.filter((r) => r !== first);
        if (later.length) ev.push(`${later.length} later removal(s) of the same endpoint of the same service (stale chains) ignored: ${later.slice(0, 3).map((r) => `${r.service} ${iso(r.ts)}`).join('; ')}`);
      }
      // held at termination: added before it and not removed since (a service dropped long before does not hold it)
      const held = lower > -Infinity && !list.some((r) => !r.added && r.ts > lower && termStart !== null && r.ts <= termStart);
      stops.push({ key, first, held });
    }
    const open = stops.filter((x) => !x.first && x.held);
    const done = stops.filter((x) => x.first).map((x) => x.first!);
    if (!done.length || open.length) {
      byNode.set(node, null);
      if (open.length) stillOpen = true;
      for (const o of open) ev.push(`${groups.get(o.key)![0]!.service}${node ? ` on ${node}` : ''} still routed to it when the recording ended`);
      continue;
    }
    const last = done.reduce((a, b) => (b.ts > a.ts ? b : a));
    byNode.set(node, last.ts);
    if (done.length > 1) {
      ev.push(`${node || 'this node'} routed to it through ${done.length} services; it stopped routing when the last one did: ${done.sort((a, b) => a.ts - b.ts).map((r) => `${r.service} stopped routing at ${iso(r.ts)}`).join(', ')}`);
    }
  }
  const vals = [...byNode.values()];
  const at = vals.length && vals.every((x) => x !== null) ? Math.max(...(vals as number[])) : null;
  if (byNode.size > 1 && at !== null) ev.push(`every node recorded (${[...byNode.keys()].join(', ')}) stopped routing to it by ${iso(at)}, the last one ${[...byNode].find(([, v]) => v === at)![0]}`);
  return { at, byNode, open: stillOpen };
}

/**
 * When each path (cluster IP, NodePort, LB/external IP) stopped routing to the pod, per node: the first
 * path-rule-removed after the last re-add before termination began. A Local path that kept the pod after
 * the cluster IP path dropped it is kube-proxy's terminating fallback (ProxyTerminatingEndpoints: the node's
 * only local endpoint, serving and terminating, stays in use for external traffic).
 */
function pathStops(rules: PathRuleEv[], ips: string[], ports: number[], termStart: number | null, terminatingAt: number | null, ev: string[],
  noReadyOther?: (r: PodRoute) => boolean, beforeReceipt?: (r: PodRoute) => string | null): PodRoute[] {
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
  // kube-proxy routes a serving+terminating endpoint only when the path has no ready one (Cluster: anywhere;
  // Local: on this node): a path that kept the pod after its endpoint turned terminating, with no other ready
  // endpoint, kept it as the terminating fallback (on one node with one replica: every path, Cluster ones too)
  if (terminatingAt !== null && noReadyOther) {
    for (const r of out) {
      if (!noReadyOther(r)) continue;
      if (r.stoppedAt !== null && r.stoppedAt <= terminatingAt) {
        // removed before this node received the terminating change: the order of the two receipts cannot
        // show the fallback; the EndpointSlice's own sequence of states can (fallbackBeforeReceipt)
        const why = beforeReceipt?.(r) ?? null;
        if (why) { r.fallback = true; ev.push(why); }
        continue;
      }
      r.fallback = true;
      ev.push(`terminating fallback: the ${r.path} path ${r.addr} (${r.policy === 'Local' ? 'externalTrafficPolicy: Local' : `policy ${r.policy}`}) kept routing to this pod ${r.stoppedAt !== null ? `${ms(r.stoppedAt - terminatingAt)} ms` : 'until the end of the recording'} after its endpoint turned terminating (received ${iso(terminatingAt)}) while still serving, with no other ready endpoint${r.policy === 'Local' ? ' on its node' : ''}: kube-proxy routes serving+terminating endpoints when none is ready (ProxyTerminatingEndpoints)`);
    }
  }
  const clusterStop = out.filter((r) => r.path === 'cluster-ip' && r.stoppedAt !== null).map((r) => r.stoppedAt!).sort((a, b) => a - b)[0];
  if (clusterStop !== undefined) {
    for (const r of out) {
      if (r.fallback || r.path === 'cluster-ip' || r.policy !== 'Local' || (r.stoppedAt !== null && r.stoppedAt <= clusterStop)) continue;
      r.fallback = true;
      ev.push(`terminating fallback: the ${r.path} path ${r.addr} (externalTrafficPolicy: Local) kept routing to this pod ${r.stoppedAt !== null ? `${ms(r.stoppedAt - clusterStop)} ms` : 'until the end of the recording'} after the cluster IP path dropped it${terminatingAt !== null ? ` (endpoint terminating since ${iso(terminatingAt)})` : ''}: with no ready local endpoint kube-proxy keeps serving+terminating ones for external traffic (ProxyTerminatingEndpoints)`);
    }
  }
  return out;
}

/**
 * A path whose rule was removed BEFORE this node received the endpoint's terminating change (the recorder's
 * EndpointSlice watch lagged kube-proxy's: on the real node by 350 ms, while kube-proxy synced the
 * terminating state and kept the pod) cannot show the fallback by the order of the two receipts. The
 * EndpointSlice's own sequence of states can, with kube-proxy's rule for it: kube-proxy programs a ready
 * endpoint, and a serving+terminating one when the path has no ready endpoint (ProxyTerminatingEndpoints,
 * on by default since v1.26: an API server of v1.29 or later has no older kube-proxy under the version skew
 * policy). So when the recorded states went ready → serving+terminating with no other ready endpoint (the
 * caller checked that) → not serving or removed, a removal after the termination began answered that LAST
 * change, and the path routed to the pod all the while its endpoint was terminating and serving: the
 * fallback. Returns the evidence line, or null when the recorded data cannot support it: API server older
 * or unknown, the endpoint not ready right before it turned terminating, no later change recorded, or the
 * removal before the termination began. `sl`: this pod's slice changes in receipt order.
 */
export function fallbackBeforeReceipt(sl: SliceChange[], term: SliceChange, r: PodRoute, termStart: number | null, server: { gitVersion: string; major: number; minor: number } | null): string | null {
  if (r.stoppedAt === null || termStart === null || r.stoppedAt < termStart) return null;
  if (!server || (server.major === 1 && server.minor < 29) || server.major < 1) return null;
  if (term.terminating !== true || term.serving !== true) return null;
  const i = sl.indexOf(term);
  if (i < 0) return null;
  const prev = sl.slice(0, i).filter((c) => c.slice === term.slice).pop();
  if (!prev || prev.change === 'removed' || prev.ready !== true) return null;
  const next = sl.slice(i + 1).find((c) => c.slice === term.slice && (c.change === 'removed' || c.serving === false));
  if (!next) return null;
  return `terminating fallback (from the EndpointSlice's states): the ${r.path} path ${r.addr} (${r.policy}) stopped routing at ${iso(r.stoppedAt)}, ${ms(term.ts - r.stoppedAt)} ms before this node's watch received the endpoint terminating (${iso(term.ts)}); `
    + `the slice went ready → terminating+serving with no other ready endpoint${r.policy === 'Local' ? ' on its node' : ''} → ${next.change === 'removed' ? 'removed' : 'not serving'} (received ${iso(next.ts)}), and kube-proxy (API server ${server.gitVersion}, so ≥ v1.26 by version skew) keeps serving+terminating endpoints when none is ready: it removed the rule on the last change`;
}

/**
 * The pod's endpoint was received terminating and still serving (`term`), and at that instant the service's
 * EndpointSlices as received held no other ready endpoint for the route's path (Cluster: anywhere; Local: on
 * the terminating endpoint's node, the only node whose Local path routes to it).
 */
export function onlyServingTerminating(changes: SliceChange[], term: SliceChange, ips: string[], r: PodRoute): boolean {
  if (term.terminating !== true || term.serving === false) return false;
  const svc = r.service.replace(/:[^:/]*$/, '');
  const state = new Map<string, SliceChange>();
  for (const c of changes) {
    if (c.ts > term.ts) continue;
    if (`${c.namespace ?? ''}/${c.service ?? ''}` !== svc) continue;
    const k = `${c.slice}|${c.ip}`;
    if (c.change === 'removed') state.delete(k); else state.set(k, c);
  }
  for (const c of state.values()) {
    if (ips.includes(c.ip) || c.ready !== true) continue;
    if (r.policy === 'Local' && c.node !== term.node) continue;
    return false;
  }
  return true;
}

export function podName(s: PodSequence): string { return podLabel(s.pod); }

/**
 * The low-volume facts every model needs, read once from a bundle: process events, rule events,
 * kube-derived events and EndpointSlice changes. Packets, conntrack and probes stay streamed.
 */
import { signame as signalName } from '../../schemas/signals.js';
import type { BundleReader } from '../bundle-reader.js';
import { num, parseJson, sane, str } from '../util.js';
import { META_KEYS } from '../../schemas/rows.js';
import { SliceTracker, type SliceChange } from './slices.js';
import { serverVersionOf } from './workload.js';

export interface Ev<A = Record<string, unknown>> { ts: number; source: string; kind: string; subject: string | null; a: A }

export interface SignalEv { ts: number; source: string; pid: number | null; signame: string; phase: string | null; sender: string | null; netns: number | null; podUid: string | null }
/** strace attached to a process (process-attached): ts is when it took effect when `confirmed` */
export interface AttachEv { ts: number; source: string; pid: number | null; netns: number | null; podUid: string | null; mode: string | null; reason: string | null; triggerNs: number | null; confirmed: boolean | null; error: string | null }
/** meta.strace_mode of a recorded bundle (null for imported bundles and bundles before issue 14) */
export interface StraceModeMeta { requested: string; mode: string; reason: string | null }
export interface ListenEv { ts: number; source: string; pid: number | null; addr: string; port: number | null; how: string; netns: number | null; cgroup: number | null; podUid: string | null }
export interface ExitEv { ts: number; source: string; pid: number | null; code: number | null; signal: string | null }
export interface RuleEv { ts: number; source: string; added: boolean; ip: string; port: number | null; service: string; vip: string | null; mode: string; node: string | null; chain: string | null; clock: string | null }
export interface PathRuleEv { ts: number; added: boolean; ip: string; port: number | null; service: string; path: string; addr: string; policy: string; node: string | null; mode: string }
export interface NoEpRuleEv { ts: number; added: boolean; service: string; vip: string | null; action: string; node_port: number | null }
export interface AcceptEv { ts: number; source: string; pid: number | null; peer: string; peerPort: number }
export interface TcpResetEv {
  ts: number; source: string; saddr: string; sport: number | null; daddr: string; dport: number | null; reason: string | null; state: string | null;
  /** the network namespace (inode) it was sent in, when the recorder could tell */
  netns?: number | null;
}

export interface Facts {
  signals: SignalEv[];
  listens: ListenEv[];
  closes: ListenEv[];
  exits: ExitEv[];
  rules: RuleEv[];
  /** per path (cluster IP, NodePort, LB/external IP): path-rule-added/removed */
  pathRules?: PathRuleEv[];
  noEp: NoEpRuleEv[];
  resets: TcpResetEv[];
  /** accept(2) with the peer's address: the app took this connection out of the accept queue */
  accepts?: AcceptEv[];
  podTerminating: Ev[];
  attaches: AttachEv[];
  straceMode: StraceModeMeta | null;
  sliceChanges: SliceChange[];
  /** the recorded API server's version (null or absent: unknown); kube-proxy is at most 3 minors older (version skew policy) */
  server?: { gitVersion: string; major: number; minor: number } | null;
  /** endpoint-changed events when there are no EndpointSlice rows */
  warnings: string[];
}


function straceModeOf(reader: BundleReader): StraceModeMeta | null {
  const v = reader.metaValue(META_KEYS.straceMode);
  if (!v) return null;
  const j = parseJson(v);
  if (!j.ok || typeof j.v.mode !== 'string') return null;
  return { requested: str(j.v.requested) ?? String(j.v.mode), mode: String(j.v.mode), reason: str(j.v.reason) };
}

export function emptyFacts(): Facts {
  return { signals: [], listens: [], closes: [], exits: [], rules: [], pathRules: [], noEp: [], resets: [], accepts: [], podTerminating: [], attaches: [], straceMode: null, sliceChanges: [], warnings: [] };
}

export function loadFacts(reader: BundleReader): Facts {
  const f: Facts = { ...emptyFacts(), straceMode: straceModeOf(reader), server: serverVersionOf(reader) };
  const kinds = ['signal', 'listen', 'listener-closed', 'process-exit', 'process-attached', 'endpoint-rule-added', 'endpoint-rule-removed',
    'no-endpoint-rule-added', 'no-endpoint-rule-removed', 'path-rule-added', 'path-rule-removed', 'tcp-reset-sent', 'pod-terminating', 'endpoint-changed', 'accept'];
  const derivedSlice: SliceChange[] = [];
  let badTs = 0;
  for (const e of reader.eventsParsed({ kinds })) {
    const ts = sane(e.ts_ns);
    if (ts === null) { badTs++; continue; }
    const a = e.a;
    const source = String(e.source);
    switch (e.kind) {
      case 'signal': {
        const signame = str(a.signame) ?? (num(a.signo) !== null ? signalName(num(a.signo)!) : null);
        if (!signame) break;
        f.signals.push({ ts, source, pid: num(a.pid), signame, phase: str(a.phase), sender: str(a.sender_comm) ?? (num(a.sender_pid) !== null ? String(a.sender_pid) : null), netns: num(a.netns), podUid: str(a.pod_uid) });
        break;
      }
      case 'listen': case 'listener-closed': {
        const addr = str(a.addr) ?? '0.0.0.0';
        const l = { ts, source, pid: num(a.pid), addr, port: num(a.port), how: str(a.how) ?? '?', netns: num(a.netns), cgroup: num(a.cgroup_id), podUid: str(a.pod_uid) };
        (e.kind === 'listen' ? f.listens : f.closes).push(l);
        break;
      }
      case 'process-attached':
        f.attaches.push({ ts, source, pid: num(a.pid), netns: num(a.netns), podUid: str(a.pod_uid), mode: str(a.mode), reason: str(a.reason),
          triggerNs: num(a.trigger_ns), confirmed: typeof a.confirmed === 'boolean' ? a.confirmed : null, error: str(a.error) });
        break;
      case 'accept': {
        const peer = str(a.peer); const peerPort = num(a.peer_port);
        if (peer && peerPort !== null) (f.accepts ??= []).push({ ts, source, pid: num(a.pid), peer, peerPort });
        break;
      }
      case 'process-exit':
        f.exits.push({ ts, source, pid: num(a.pid), code: num(a.code), signal: str(a.signal) });
        break;
      case 'endpoint-rule-added': case 'endpoint-rule-removed': {
        const ip = str(a.ip) ?? (str(a.endpoint)?.replace(/:\d+$/, '') ?? null);
        if (!ip) break;
        f.rules.push({ ts, source, added: e.kind === 'endpoint-rule-added', ip, port: num(a.port), service: str(a.service) ?? str(a.vip) ?? '?', vip: str(a.vip), mode: str(a.mode) ?? '?', node: str(a.node), chain: str(a.chain), clock: str(a.clock) });
        break;
      }
      case 'path-rule-added': case 'path-rule-removed': {
        const ip = str(a.ip) ?? (str(a.endpoint)?.replace(/:\d+$/, '') ?? null);
        const addr = str(a.addr);
        if (!ip || !addr) break;
        (f.pathRules ??= []).push({ ts, added: e.kind === 'path-rule-added', ip, port: num(a.port), service: str(a.service) ?? '?', path: str(a.path) ?? '?', addr, policy: str(a.policy) ?? 'Cluster', node: str(a.node), mode: str(a.mode) ?? '?' });
        break;
      }
      case 'no-endpoint-rule-added': case 'no-endpoint-rule-removed':
        f.noEp.push({ ts, added: e.kind === 'no-endpoint-rule-added', service: str(a.service) ?? '?', vip: str(a.vip), action: str(a.action) ?? '?', node_port: num(a.node_port) });
        break;
      case 'tcp-reset-sent': {
        const saddr = str(a.saddr); const daddr = str(a.daddr);
        if (saddr && daddr) f.resets.push({ ts, source, saddr, sport: num(a.sport), daddr, dport: num(a.dport), reason: str(a.reason), state: str(a.state), netns: num(a.netns) });
        break;
      }
      case 'pod-terminating':
        f.podTerminating.push({ ts, source, kind: e.kind, subject: e.subject, a });
        break;
      case 'endpoint-changed': {
        const ip = str(a.ip);
        const ch = str(a.change);
        if (!ip || (ch !== 'added' && ch !== 'removed' && ch !== 'modified')) break;
        derivedSlice.push({
          ts, ip, change: ch, namespace: str(a.namespace), slice: str(a.slice) ?? '?', service: str(a.service),
          ports: Array.isArray(a.ports) ? (a.ports as unknown[]).filter((x): x is number => typeof x === 'number') : [],
          ready: typeof a.ready === 'boolean' ? a.ready : null, serving: typeof a.serving === 'boolean' ? a.serving : null,
          terminating: typeof a.terminating === 'boolean' ? a.terminating : null, podUid: str(a.pod_uid), podName: str(a.pod), node: str(a.node),
        });
        break;
      }
    }
  }
  const tracker = new SliceTracker();
  let sliceRows = 0;
  for (const r of reader.k8sObjects({ kinds: ['EndpointSlice'] })) {
    const ts = sane(r.ts_ns);
    if (ts === null) { badTs++; continue; }
    sliceRows++;
    f.sliceChanges.push(...tracker.push(ts, String(r.event_type), r.namespace, r.name, r.object));
  }
  if (!sliceRows) f.sliceChanges = derivedSlice;
  if (tracker.bad) f.warnings.push(`${tracker.bad} EndpointSlice rows are not valid JSON and were skipped`);
  if (badTs) f.warnings.push(`${badTs} rows have an impossible timestamp (negative, not a number or beyond year 9999) and were skipped`);
  return f;
}

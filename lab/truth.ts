/**
 * The lab's ground truth for one scenario run, from the lab's own clocks and logs (kubelet actions,
 * the backends' JSON logs, the API server's store changes, kube-proxy's sync records and the kernel's
 * conntrack events read by the lab) — independent of the recorder. Instants: Unix-epoch ns (realtime).
 */
import type { KubeletEvent } from './node/kubelet.js';
import type { SyncRecord } from './kubeproxy/proxy.js';
import { conntrackFailures } from './conntrack.js';
import type { ConntrackRow } from '../schemas/rows.js';

export interface TruthPod {
  namespace: string;
  name: string;
  uid: string;
  ip: string;
  port: number;
  /** the kubelet's kill(SIGTERM) call */
  sigtermNs: number | null;
  /** the backend's SIGTERM handler ran */
  sigtermReceivedNs: number | null;
  /** the backend closed its listening socket: stamped right before its close(2) */
  listenerClosedNs: number | null;
  /** ... and right after close(2) returned: the close happened in [listenerClosedNs, listenerClosedAfterNs] */
  listenerClosedAfterNs?: number | null;
  /** the backend process exited (its last log line, else the kubelet's wait) */
  exitNs: number | null;
  /** SIGKILL at the end of the grace period */
  killed: boolean;
  killNs: number | null;
  /** the kubelet saw deletionTimestamp */
  deletionSeenNs: number | null;
  preStopStartNs: number | null;
  preStopEndNs: number | null;
  /** the API server stored the EndpointSlice with this endpoint not ready / terminating */
  endpointTerminatingNs: number | null;
  /** the API server stored the EndpointSlice without this endpoint */
  endpointRemovedNs: number | null;
  /** the kube-proxy sync that stopped routing new connections to this endpoint */
  ruleRemoved: { syncStartNs: number; syncEndNs: number; seq: number } | null;
}

export interface TruthFailure {
  atNs: number;
  /** "ip:port" */
  client: string;
  /** "vip:port" (or node-ip:nodePort) */
  service: string;
  backendIp: string | null;
  backendPort: number | null;
  /** "ns/name" of the pod behind backendIp, null when none (no endpoint) */
  backendPod: string | null;
  /** refused: SYN answered by RST; closed-at-kill: open connection cut by SIGKILL; timeout: no answer (client log) */
  kind: 'refused' | 'closed-at-kill' | 'reset-at-close' | 'timeout' | 'error';
  /** where the lab learnt it */
  from: 'conntrack' | 'client-log';
  /** client-log: the error the client logged (e.g. ECONNRESET, timeout) */
  error?: string;
  /** two-node scenarios: the node whose rules DNATed it, when not the first (the remote client's failures) */
  node?: string;
}

export interface Truth {
  schema: 'rolltrace.lab-truth/v1';
  scenario: string;
  seed: number;
  node: string;
  mode: 'nftables' | 'iptables';
  service: { namespace: string; name: string; vip: string; port: number; nodePort: number | null; externalTrafficPolicy: string };
  startNs: number;
  endNs: number;
  recorder: { ran: boolean; exitCode: number | null; reason: string | null };
  pods: TruthPod[];
  /** every pod the run started, terminated or not */
  allPods: Array<{ namespace: string; name: string; uid: string; ip: string; startedNs: number; listeningNs: number | null; readyNs: number | null }>;
  syncs: SyncRecord[];
  /** two-node scenarios: the second node's kube-proxy syncs, and per terminated pod (by uid) the sync that stopped routing to it there */
  node2?: { node: string; syncs: SyncRecord[]; ruleRemoved: Record<string, { syncStartNs: number; syncEndNs: number; seq: number } | null>;
    /** real node: failed flows in node 2's conntrack that match no failure the remote client logged */
    unmatchedConntrack?: number };
  failures: TruthFailure[];
  /** enobufs: conntrack's "We have hit ENOBUFS" warnings (the kernel dropped events the lab never saw) */
  conntrack: { events: number; skipped: number; enobufs: number };
  /** the real node: the service's EndpointSlice as the lab's own watch received it (each state in full) */
  slices?: SliceChange[];
}

export interface SliceChange { ts_ns: number; type: string; endpoints: Array<{ ip: string; ready: boolean; serving: boolean; terminating: boolean }> }

export interface ClientResult { ts_ns: number; start_ns?: number; ok: boolean; error?: string; client?: string; target: string }

export interface TruthInput {
  scenario: string; seed: number; node: string; mode: 'nftables' | 'iptables';
  service: Truth['service'];
  startNs: number; endNs: number;
  recorder: Truth['recorder'];
  kubelet: KubeletEvent[];
  syncs: SyncRecord[];
  slices: SliceChange[];
  conntrack: { events: ConntrackRow[]; skipped: number; enobufs: number };
  clientResults?: ClientResult[];
  backendPort: number;
  node2?: { node: string; syncs: SyncRecord[] };
}

/** The kube-proxy sync that stopped routing to an endpoint after its pod's deletion. */
function removalSync(syncs: SyncRecord[], ep: string, deletion: number): SyncRecord | undefined {
  return syncs.find((s) => !s.error && s.removed.some((r) => r.endsWith(`|${ep}`)) && s.startNs >= deletion - 1e9);
}

export function buildTruth(i: TruthInput): Truth {
  const byPod = new Map<string, KubeletEvent[]>();
  for (const e of i.kubelet) { const a = byPod.get(e.uid) ?? []; a.push(e); byPod.set(e.uid, a); }
  const first = (evs: KubeletEvent[], what: string) => evs.find((e) => e.what === what)?.ts_ns ?? null;
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  const allPods: Truth['allPods'] = [];
  const pods: TruthPod[] = [];
  const ipToPod = new Map<string, string>();
  const node2Removed: Record<string, { syncStartNs: number; syncEndNs: number; seq: number } | null> = {};
  for (const [uid, evs] of byPod) {
    const started = evs.find((e) => e.what === 'container-started');
    if (!started || !started.ip) continue;
    const [namespace, name] = started.pod.split('/') as [string, string];
    ipToPod.set(started.ip, started.pod);
    allPods.push({ namespace, name, uid, ip: started.ip, startedNs: started.ts_ns, listeningNs: first(evs, 'backend:listening'),
      readyNs: first(evs, 'probe-ready') ?? first(evs, 'ready-without-probe') });
    const deletion = first(evs, 'deletion-seen');
    if (deletion == null) continue;
    const ip = started.ip;
    const ep = `${ip}:${i.backendPort}`;
    let terminatingNs: number | null = null, removedNs: number | null = null, present = false;
    for (const s of i.slices) {
      const e = s.endpoints.find((x) => x.ip === ip);
      if (e) { present = true; if (terminatingNs == null && (e.terminating || !e.ready) && s.ts_ns >= deletion - 5e9) terminatingNs = s.ts_ns; }
      else if (present && removedNs == null && s.ts_ns >= deletion) removedNs = s.ts_ns;
    }
    const sync = removalSync(i.syncs, ep, deletion);
    if (i.node2) { const s2 = removalSync(i.node2.syncs, ep, deletion); node2Removed[uid] = s2 ? { syncStartNs: s2.startNs, syncEndNs: s2.endNs, seq: s2.seq } : null; }
    pods.push({
      namespace, name, uid, ip, port: i.backendPort,
      sigtermNs: first(evs, 'sigterm-sent'), sigtermReceivedNs: first(evs, 'backend:sigterm'),
      listenerClosedNs: first(evs, 'backend:listener-closed'),
      listenerClosedAfterNs: num(evs.find((e) => e.what === 'backend:listener-closed')?.detail?.after_ns),
      exitNs: first(evs, 'backend:exit') ?? first(evs, 'container-exited'),
      killed: first(evs, 'sigkill-sent') != null, killNs: first(evs, 'sigkill-sent'),
      deletionSeenNs: deletion, preStopStartNs: first(evs, 'prestop-start'), preStopEndNs: first(evs, 'prestop-end'),
      endpointTerminatingNs: terminatingNs, endpointRemovedNs: removedNs,
      ruleRemoved: sync ? { syncStartNs: sync.startNs, syncEndNs: sync.endNs, seq: sync.seq } : null,
    });
  }
  const svc = i.service;
  const isService = (ip: string, port: number) => (ip === svc.vip && port === svc.port) || (svc.nodePort != null && port === svc.nodePort);
  const kills = pods.filter((p) => p.killNs != null).map((p) => ({ ip: p.ip, atNs: p.killNs!, untilNs: p.exitNs != null && p.exitNs >= p.killNs! ? p.exitNs + 50e6 : null }));
  const closes = pods.filter((p) => p.listenerClosedNs != null).map((p) => ({ ip: p.ip, atNs: p.listenerClosedNs!, afterNs: p.listenerClosedAfterNs }));
  const failures: TruthFailure[] = conntrackFailures(i.conntrack.events, isService, kills, 300e6, closes).map((f) => ({
    ...f, backendPod: f.backendIp ? ipToPod.get(f.backendIp) ?? null : null, from: 'conntrack' as const,
  }));
  const used = new Set<TruthFailure>();
  for (const r of [...(i.clientResults ?? [])].sort((a, b) => a.ts_ns - b.ts_ns)) {
    if (r.ok) continue;
    // a connection already seen by conntrack is not counted twice. A socket whose connect failed has no local
    // address in the client's log: match it by time to a conntrack failure on the NodePort that its error
    // names — ECONNREFUSED a refused SYN, or ECONNRESET: a reset that came before the client's event loop saw
    // the handshake complete fails the connect itself (real node, local-blackhole: reset-at-close 3.3 ms
    // before the log line). The earliest unpaired one within 200 ms, not the nearest: the client connects one
    // at a time and logs in that order, so conntrack's failures pair with its lines in order; a line its
    // event loop wrote late (real node, local-blackhole nftables: ≥ 102 ms after its RST) took its
    // successor's twin when nearest won, each later line the next one's, and the last connection was
    // counted twice (conntrack's entry and an address-less line)
    if (r.client && failures.some((f) => f.client === r.client)) continue;
    const err = r.error ?? '';
    const twin = failures.filter((f) => f.from === 'conntrack' && !used.has(f) && svc.nodePort != null && f.service.endsWith(`:${svc.nodePort}`)
      && Math.abs(f.atNs - r.ts_ns) < 200e6 && ((/ECONNREFUSED/.test(err) && f.kind === 'refused') || (/ECONNRESET/.test(err) && (f.kind === 'reset-at-close' || f.kind === 'closed-at-kill'))))
      .sort((a, b) => a.atNs - b.atNs)[0];
    if (twin) { used.add(twin); continue; }
    failures.push({ atNs: r.ts_ns, client: r.client ?? '?', service: r.target, backendIp: null, backendPort: null, backendPod: null,
      kind: /timeout|abort/i.test(err) ? 'timeout' : 'error', from: 'client-log', ...(err ? { error: err } : {}) });
  }
  failures.sort((a, b) => a.atNs - b.atNs);
  return {
    schema: 'rolltrace.lab-truth/v1', scenario: i.scenario, seed: i.seed, node: i.node, mode: i.mode, service: svc,
    startNs: i.startNs, endNs: i.endNs, recorder: i.recorder, pods, allPods, syncs: i.syncs,
    ...(i.node2 ? { node2: { node: i.node2.node, syncs: i.node2.syncs, ruleRemoved: node2Removed } } : {}), failures,
    conntrack: { events: i.conntrack.events.length, skipped: i.conntrack.skipped, enobufs: i.conntrack.enobufs },
  };
}

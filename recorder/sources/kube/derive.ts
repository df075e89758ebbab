/**
 * Pure derivation of timeline events from raw Kubernetes watch events (no I/O): used by the kube
 * source while recording and by `rolltrace import --watch`.
 *
 *   deriveKubeEvents(state, watchEvent, ts_ns) -> { state, events }
 *
 * Pods: `pod-created` (ADDED of a pod not seen before), `pod-ready` (the Ready condition flips),
 * `pod-terminating` (metadata.deletionTimestamp appears), `pod-deleted` (DELETED).
 * EndpointSlices: `endpoint-changed` per endpoint address, diffing the slice against its previous
 * version (added / removed / modified conditions or ports).
 *
 * LIST rows (the initial list) set the baseline and emit nothing, except `pod-terminating` for a pod
 * that is already terminating (its attrs carry the real deletionTimestamp). RELIST rows (after a 410)
 * are diffed like MODIFIED; objects missing from a relist are closed with `endRelist`.
 * The input state is never mutated.
 */
import { parseJsonBounded } from '../../../schemas/json.js';
import { nsFromIso } from '../../../schemas/analysis.js';
import { ev, type RtEvent, type SourceName } from '../../../schemas/events.js';

export interface KubeObject {
  kind?: string;
  apiVersion?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    deletionTimestamp?: string | null;
    deletionGracePeriodSeconds?: number | null;
    labels?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
}

export interface WatchEvent {
  /** ADDED, MODIFIED, DELETED, BOOKMARK, ERROR, or LIST / RELIST for list items */
  type: string;
  object: KubeObject;
  /** the object's kind when the object itself lacks it (list items) */
  kind?: string;
}

export interface PodInfo {
  namespace: string;
  name: string;
  uid: string;
  ip: string | null;
  node: string | null;
  ready: boolean;
  terminating: boolean;
}

export interface EndpointInfo {
  ip: string;
  ports: number[];
  ready: boolean | null;
  serving: boolean | null;
  terminating: boolean | null;
  pod: string | null;
  pod_uid: string | null;
  node: string | null;
}

export interface SliceInfo {
  namespace: string;
  name: string;
  service: string | null;
  /** by address */
  endpoints: Record<string, EndpointInfo>;
}

export interface KubeState {
  /** uid -> pod */
  pods: Record<string, PodInfo>;
  /** namespace/name -> slice */
  slices: Record<string, SliceInfo>;
}

export function emptyKubeState(): KubeState {
  return { pods: {}, slices: {} };
}

export interface DeriveResult {
  state: KubeState;
  events: RtEvent[];
}

const str = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);
const boolOrNull = (v: unknown): boolean | null => (typeof v === 'boolean' ? v : null);

function podReady(o: KubeObject): boolean {
  const conds = ((o.status as { conditions?: Array<{ type?: string; status?: string }> } | undefined)?.conditions) ?? [];
  return conds.some((c) => c.type === 'Ready' && c.status === 'True');
}

export function podInfo(o: KubeObject): PodInfo {
  const md = o.metadata ?? {};
  const status = (o.status ?? {}) as { podIP?: string };
  const spec = (o.spec ?? {}) as { nodeName?: string };
  return {
    namespace: md.namespace ?? '',
    name: md.name ?? '',
    uid: md.uid ?? `${md.namespace ?? ''}/${md.name ?? ''}`,
    ip: str(status.podIP),
    node: str(spec.nodeName),
    ready: podReady(o),
    terminating: !!md.deletionTimestamp,
  };
}

function podRef(p: PodInfo) {
  return { namespace: p.namespace, name: p.name, uid: p.uid, ip: p.ip, node: p.node };
}

export function sliceInfo(o: KubeObject): SliceInfo {
  const md = o.metadata ?? {};
  const ports = ((o.ports as Array<{ port?: number }> | null | undefined) ?? [])
    .map((p) => p.port).filter((p): p is number => typeof p === 'number').sort((a, b) => a - b);
  const endpoints: Record<string, EndpointInfo> = {};
  const eps = (o.endpoints as Array<Record<string, unknown>> | null | undefined) ?? [];
  for (const e of eps) {
    const conds = (e.conditions ?? {}) as Record<string, unknown>;
    const ref = (e.targetRef ?? null) as { kind?: string; name?: string; uid?: string } | null;
    const isPod = ref && (ref.kind === undefined || ref.kind === 'Pod');
    for (const ip of (e.addresses as string[] | undefined) ?? []) {
      endpoints[ip] = {
        ip,
        ports,
        ready: boolOrNull(conds.ready),
        serving: boolOrNull(conds.serving),
        terminating: boolOrNull(conds.terminating),
        pod: isPod ? str(ref!.name) : null,
        pod_uid: isPod ? str(ref!.uid) : null,
        node: str(e.nodeName),
      };
    }
  }
  return {
    namespace: md.namespace ?? '',
    name: md.name ?? '',
    service: str(md.labels?.['kubernetes.io/service-name']),
    endpoints,
  };
}

function sameEndpoint(a: EndpointInfo, b: EndpointInfo): boolean {
  return a.ready === b.ready && a.serving === b.serving && a.terminating === b.terminating
    && a.pod === b.pod && a.pod_uid === b.pod_uid && a.node === b.node
    && a.ports.length === b.ports.length && a.ports.every((p, i) => p === b.ports[i]);
}

function endpointEvent(
  s: SliceInfo, e: EndpointInfo, change: 'added' | 'removed' | 'modified', ts: number, source: SourceName,
): RtEvent {
  return ev('endpoint-changed', ts, source, e.pod ? `${s.namespace}/${e.pod}` : e.ip, {
    namespace: s.namespace, slice: s.name, service: s.service, ip: e.ip, ports: e.ports, change,
    ready: e.ready, serving: e.serving, terminating: e.terminating, pod: e.pod, pod_uid: e.pod_uid, node: e.node,
  });
}

/** Diff two versions of one slice (either may be null: created / deleted). */
export function diffSlices(prev: SliceInfo | null, cur: SliceInfo | null, ts: number, source: SourceName = 'kube'): RtEvent[] {
  const out: RtEvent[] = [];
  const before = prev?.endpoints ?? {};
  const after = cur?.endpoints ?? {};
  for (const ip of Object.keys(after)) {
    const b = before[ip];
    if (!b) out.push(endpointEvent(cur!, after[ip]!, 'added', ts, source));
    else if (!sameEndpoint(b, after[ip]!)) out.push(endpointEvent(cur!, after[ip]!, 'modified', ts, source));
  }
  for (const ip of Object.keys(before)) {
    if (!(ip in after)) out.push(endpointEvent(prev!, before[ip]!, 'removed', ts, source));
  }
  return out;
}

function kindOf(w: WatchEvent): string {
  return w.object?.kind ?? w.kind ?? '';
}

/** Apply one watch event (or list item) to the state; returns the new state and the derived events. */
export function deriveKubeEvents(state: KubeState, w: WatchEvent, ts_ns: number, source: SourceName = 'kube'): DeriveResult {
  const kind = kindOf(w);
  const type = w.type;
  if (!w.object || typeof w.object !== 'object' || type === 'BOOKMARK' || type === 'ERROR') return { state, events: [] };
  if (kind === 'Pod') return derivePod(state, w, type, ts_ns, source);
  if (kind === 'EndpointSlice') return deriveSlice(state, w, type, ts_ns, source);
  return { state, events: [] };
}

function derivePod(state: KubeState, w: WatchEvent, type: string, ts: number, source: SourceName): DeriveResult {
  const cur = podInfo(w.object);
  const prev = state.pods[cur.uid];
  const events: RtEvent[] = [];
  const subject = `${cur.namespace}/${cur.name}`;
  const pods = { ...state.pods };
  if (type === 'DELETED') {
    delete pods[cur.uid];
    if (prev && !prev.terminating && cur.terminating) events.push(terminatingEvent(w.object, cur, ts, source));
    events.push(ev('pod-deleted', ts, source, subject, podRef({ ...cur, ip: cur.ip ?? prev?.ip ?? null })));
    return { state: { ...state, pods }, events };
  }
  pods[cur.uid] = { ...cur, ip: cur.ip ?? prev?.ip ?? null };
  if (type === 'LIST') {
    if (cur.terminating) events.push(terminatingEvent(w.object, cur, ts, source));
    return { state: { ...state, pods }, events };
  }
  if (!prev && (type === 'ADDED' || type === 'RELIST')) events.push(ev('pod-created', ts, source, subject, podRef(cur)));
  const wasReady = prev?.ready ?? false;
  if (cur.ready !== wasReady) events.push(ev('pod-ready', ts, source, subject, { ...podRef(cur), ready: cur.ready }));
  if (cur.terminating && !(prev?.terminating ?? false)) events.push(terminatingEvent(w.object, cur, ts, source));
  return { state: { ...state, pods }, events };
}

function terminatingEvent(o: KubeObject, p: PodInfo, ts: number, source: SourceName): RtEvent {
  const md = o.metadata ?? {};
  const spec = (o.spec ?? {}) as { terminationGracePeriodSeconds?: number };
  return ev('pod-terminating', ts, source, `${p.namespace}/${p.name}`, {
    ...podRef(p),
    deletionTimestamp: String(md.deletionTimestamp),
    gracePeriodSeconds: md.deletionGracePeriodSeconds ?? spec.terminationGracePeriodSeconds ?? null,
  });
}

function deriveSlice(state: KubeState, w: WatchEvent, type: string, ts: number, source: SourceName): DeriveResult {
  const cur = sliceInfo(w.object);
  const key = `${cur.namespace}/${cur.name}`;
  const prev = state.slices[key] ?? null;
  const slices = { ...state.slices };
  if (type === 'DELETED') {
    delete slices[key];
    return { state: { ...state, slices }, events: diffSlices(prev, null, ts, source) };
  }
  slices[key] = cur;
  if (type === 'LIST') return { state: { ...state, slices }, events: [] };
  return { state: { ...state, slices }, events: diffSlices(prev, cur, ts, source) };
}

/**
 * After a RELIST of `kind` (Pod or EndpointSlice): objects the state holds that the relist did not
 * return were deleted while the watch was down. `seen` holds pod uids or slice namespace/name keys.
 */
export function endRelist(state: KubeState, kind: string, seen: Set<string>, ts_ns: number, source: SourceName = 'kube'): DeriveResult {
  const events: RtEvent[] = [];
  if (kind === 'Pod') {
    const pods = { ...state.pods };
    for (const [uid, p] of Object.entries(state.pods)) {
      if (seen.has(uid)) continue;
      delete pods[uid];
      events.push(ev('pod-deleted', ts_ns, source, `${p.namespace}/${p.name}`, podRef(p)));
    }
    return { state: { ...state, pods }, events };
  }
  if (kind === 'EndpointSlice') {
    const slices = { ...state.slices };
    for (const [key, s] of Object.entries(state.slices)) {
      if (seen.has(key)) continue;
      delete slices[key];
      events.push(...diffSlices(s, null, ts_ns, source));
    }
    return { state: { ...state, slices }, events };
  }
  return { state, events };
}

/** The key endRelist expects for an object of this kind. */
export function relistKey(kind: string, o: KubeObject): string {
  const md = o.metadata ?? {};
  return kind === 'Pod' ? (md.uid ?? `${md.namespace ?? ''}/${md.name ?? ''}`) : `${md.namespace ?? ''}/${md.name ?? ''}`;
}

export interface ParsedWatchLines {
  events: Array<WatchEvent & { ts?: number }>;
  /** lines that were not a watch event (skipped, counted) */
  bad: number;
}

/**
 * Parse watch JSON lines (`kubectl get -w -o json` / raw watch stream: {"type":..,"object":..},
 * optionally with "ts" as epoch ns or an ISO instant). Malformed lines are skipped and counted.
 */
export function parseWatchLines(text: string): ParsedWatchLines {
  const events: Array<WatchEvent & { ts?: number }> = [];
  let bad = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line) continue;
    let j: { type?: unknown; object?: unknown; ts?: unknown };
    const pj = parseJsonBounded(line);
    if (!pj.ok) { bad++; continue; }
    j = pj.v as typeof j;
    if (!j || typeof j !== 'object' || typeof j.type !== 'string' || !j.object || typeof j.object !== 'object') { bad++; continue; }
    const e: WatchEvent & { ts?: number } = { type: j.type, object: j.object as KubeObject };
    if (typeof j.ts === 'number' && Number.isFinite(j.ts)) e.ts = j.ts;
    else if (typeof j.ts === 'string') {
      const ns = nsFromIso(j.ts);
      if (ns !== null) e.ts = ns;
    }
    events.push(e);
  }
  return { events, bad };
}

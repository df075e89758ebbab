/**
 * kube source: raw LIST+WATCH of Pods, EndpointSlices, Services, Deployments, ReplicaSets,
 * PodDisruptionBudgets and Events in one namespace, narrowed by --selector or --deployment. Every list item and watch event is stored
 * whole in k8s_objects (receive time, resourceVersion); derive.ts turns pod and slice changes into
 * timeline events; ctx.pods is kept current for the strace source. Clock: receipt.
 */
import { hostname } from 'node:os';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { ev, type RtEvent } from '../../../schemas/events.js';
import type { K8sObjectRow } from '../../../schemas/rows.js';
import { ApiError, KubeClient, loadKubeConfig, nowNs, WatchLoop, type ResourceSpec } from './client.js';
import { deriveKubeEvents, emptyKubeState, endRelist, relistKey, type KubeObject, type KubeState } from './derive.js';
import { labelSelectorToString, mapSelectorMatches, matchesSelector, parseSelector, type Requirement } from './selector.js';
import { netnsHostname } from '../../netns.js';

type Filter = (o: KubeObject) => boolean;

export interface KubeTarget {
  namespace: string;
  /** label selector string of the followed pods ('' = every pod of the namespace) */
  selector: string;
  deployment?: string;
  /** labels the followed pods carry for sure (deployment template labels, or the selector's equalities) */
  templateLabels: Record<string, string>;
}

/** Resolve --deployment / --selector to a pod label selector (GET of the Deployment). */
export async function resolveTarget(client: KubeClient, opts: RecordOptions): Promise<KubeTarget> {
  const ns = opts.namespace || 'default';
  if (opts.deployment) {
    const d = await client.request('GET', `/apis/apps/v1/namespaces/${encodeURIComponent(ns)}/deployments/${encodeURIComponent(opts.deployment)}`);
    const spec = (d.spec ?? {}) as { selector?: Parameters<typeof labelSelectorToString>[0]; template?: { metadata?: { labels?: Record<string, string> } } };
    const selector = labelSelectorToString(spec.selector);
    return { namespace: ns, selector, deployment: opts.deployment, templateLabels: spec.template?.metadata?.labels ?? spec.selector?.matchLabels ?? {} };
  }
  const selector = opts.selector ?? '';
  const reqs = selector ? parseSelector(selector) : [];
  const templateLabels: Record<string, string> = {};
  for (const r of reqs) if (r.op === '=') templateLabels[r.key] = r.value;
  return { namespace: ns, selector, templateLabels };
}

export function resourceSpecs(t: KubeTarget): ResourceSpec[] {
  const ns = encodeURIComponent(t.namespace);
  const sel: Record<string, string> = t.selector ? { labelSelector: t.selector } : {};
  return [
    { kind: 'Pod', apiVersion: 'v1', path: `/api/v1/namespaces/${ns}/pods`, query: sel },
    { kind: 'Deployment', apiVersion: 'apps/v1', path: `/apis/apps/v1/namespaces/${ns}/deployments`, query: t.deployment ? { fieldSelector: `metadata.name=${t.deployment}` } : {} },
    { kind: 'ReplicaSet', apiVersion: 'apps/v1', path: `/apis/apps/v1/namespaces/${ns}/replicasets`, query: sel },
    { kind: 'Service', apiVersion: 'v1', path: `/api/v1/namespaces/${ns}/services`, query: {} },
    { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, query: {} },
    { kind: 'PodDisruptionBudget', apiVersion: 'policy/v1', path: `/apis/policy/v1/namespaces/${ns}/poddisruptionbudgets`, query: {} },
    { kind: 'Event', apiVersion: 'v1', path: `/api/v1/namespaces/${ns}/events`, query: {} },
  ];
}

/**
 * Which objects are about the followed pods. Pods and ReplicaSets are narrowed server-side; Services
 * by their selector against the pods' labels; EndpointSlices by their service or the pods they point
 * at; Events by involvedObject. Once an object is relevant it stays so (its DELETED is kept).
 */
export class Relevance {
  readonly reqs: Requirement[];
  private all: boolean;
  readonly podLabels = new Map<string, Record<string, string>>();
  readonly names = new Set<string>();
  private uids = new Set<string>();

  constructor(readonly t: KubeTarget) {
    this.reqs = t.selector ? parseSelector(t.selector) : [];
    this.all = !t.selector && !t.deployment;
  }

  private keep(kind: string, o: KubeObject): true {
    this.names.add(`${kind}/${o.metadata?.name ?? ''}`);
    if (o.metadata?.uid) this.uids.add(o.metadata.uid);
    return true;
  }

  relevant(kind: string, o: KubeObject): boolean {
    const md = o.metadata ?? {};
    if (kind === 'BOOKMARK') return true;
    if (this.all) return this.keep(kind, o);
    if (this.names.has(`${kind}/${md.name ?? ''}`)) return true;
    switch (kind) {
      case 'Pod':
        if (md.uid) this.podLabels.set(md.uid, md.labels ?? {});
        return this.keep(kind, o);
      case 'ReplicaSet':
        return this.keep(kind, o);
      case 'Deployment': {
        if (this.t.deployment) return md.name === this.t.deployment && this.keep(kind, o);
        const labels = ((o.spec as { template?: { metadata?: { labels?: Record<string, string> } } } | undefined)?.template?.metadata?.labels);
        return matchesSelector(this.reqs, labels) && this.keep(kind, o);
      }
      case 'Service': {
        const sel = (o.spec as { selector?: Record<string, string> } | undefined)?.selector;
        if (mapSelectorMatches(sel, this.t.templateLabels)) return this.keep(kind, o);
        for (const l of this.podLabels.values()) if (mapSelectorMatches(sel, l)) return this.keep(kind, o);
        return false;
      }
      case 'PodDisruptionBudget': {
        // a PDB covers the followed pods when its selector matches their labels
        const sel = (o.spec as { selector?: Parameters<typeof labelSelectorToString>[0] } | undefined)?.selector;
        if (!sel) return false;
        let reqs: Requirement[];
        try { reqs = parseSelector(labelSelectorToString(sel)); } catch { return false; }
        if (!reqs.length) return false;
        if (matchesSelector(reqs, this.t.templateLabels)) return this.keep(kind, o);
        for (const l of this.podLabels.values()) if (matchesSelector(reqs, l)) return this.keep(kind, o);
        return false;
      }
      case 'EndpointSlice': {
        const svc = md.labels?.['kubernetes.io/service-name'];
        if (svc && this.names.has(`Service/${svc}`)) return this.keep(kind, o);
        const eps = (o.endpoints as Array<{ targetRef?: { uid?: string } }> | undefined) ?? [];
        if (eps.some((e) => e.targetRef?.uid && this.uids.has(e.targetRef.uid))) return this.keep(kind, o);
        return false;
      }
      case 'Event': {
        const io = (o.involvedObject ?? o.regarding) as { kind?: string; name?: string; uid?: string } | undefined;
        if (!io) return false;
        if (io.uid && this.uids.has(io.uid)) return true;
        return this.names.has(`${io.kind ?? ''}/${io.name ?? ''}`);
      }
      default:
        return false;
    }
  }
}

export function k8sRow(ts: number, type: string, kind: string, o: KubeObject): K8sObjectRow {
  const md = o.metadata ?? {};
  return {
    ts_ns: ts,
    kind: o.kind ?? kind,
    namespace: md.namespace ?? null,
    name: md.name ?? null,
    uid: md.uid ?? null,
    resource_version: md.resourceVersion ?? null,
    event_type: type as K8sObjectRow['event_type'],
    object: JSON.stringify(o),
  };
}

class KubeSource implements Source {
  readonly name = 'kube';
  private client: KubeClient | null = null;
  private target: KubeTarget | null = null;
  private loops: WatchLoop[] = [];
  private state: KubeState = emptyKubeState();
  private rows = 0;
  private bad = 0;
  private sink: Sink | null = null;
  private ctx: RecordContext | null = null;
  private relevance: Relevance | null = null;
  /** the API server's /version body, stored as a k8s_objects row (kind Version) at start */
  private version: Record<string, unknown> | null = null;

  constructor(private opts: RecordOptions) {}

  async preflight(): Promise<Preflight> {
    const clock = 'receipt' as const;
    try {
      const kc = loadKubeConfig(this.opts.kubeconfig);
      this.client = new KubeClient(kc);
      const versions: Record<string, string> = {};
      try {
        const v = await this.client.request<{ gitVersion?: string }>('GET', '/version', undefined, undefined, 5000);
        if (v?.gitVersion) versions['kube-apiserver'] = v.gitVersion;
        if (v && typeof v === 'object') this.version = v as Record<string, unknown>;
      } catch { /* optional */ }
      this.target = await resolveTarget(this.client, this.opts);
      // access check: can we list pods?
      await this.client.request('GET', `/api/v1/namespaces/${encodeURIComponent(this.target.namespace)}/pods?limit=1`, undefined, undefined, 10000);
      const meta: Record<string, string> = {};
      const node = await this.nodeName();
      if (node) meta.node = node;
      const what = this.target.deployment ? `deployment ${this.target.deployment} (${this.target.selector || 'all pods'})`
        : this.target.selector ? `selector ${this.target.selector}` : 'every pod';
      return { ok: true, clock, versions, meta, detail: `watching pods, endpointslices, services, deployments, replicasets, poddisruptionbudgets, events of ${what} in namespace ${this.target.namespace} at ${this.client.server}` };
    } catch (e) {
      const msg = e instanceof ApiError && e.status === 404 && this.opts.deployment && !this.target
        ? `deployment ${this.opts.deployment} not found in namespace ${this.opts.namespace}`
        : (e as Error).message;
      return { ok: false, clock, detail: `cannot reach the Kubernetes API: ${msg}` };
    }
  }

  /**
   * This node's Kubernetes name: $NODE_NAME (downward API), else a Node named like this host, or with
   * --netns PID like that process's host (a kind/k3d node container) (needs get nodes; optional).
   */
  private async nodeName(): Promise<string | null> {
    if (process.env.NODE_NAME) return process.env.NODE_NAME;
    const h = (this.opts.netns && netnsHostname(this.opts.netns)) || hostname();
    try {
      const n = await this.client!.request('GET', `/api/v1/nodes/${encodeURIComponent(h)}`, undefined, undefined, 3000);
      return n.metadata?.name ?? null;
    } catch {
      return null;
    }
  }

  private emit(events: RtEvent[]): void {
    for (const e of events) this.sink!.event(e);
    this.rows += events.length;
  }

  private syncPods(): void {
    const ctx = this.ctx!;
    let changed = false;
    const live = this.state.pods;
    for (const uid of [...ctx.pods.keys()]) if (!(uid in live)) { ctx.pods.delete(uid); changed = true; }
    for (const [uid, p] of Object.entries(live)) {
      const cur = ctx.pods.get(uid);
      if (!cur || cur.ip !== p.ip || cur.name !== p.name || !!cur.terminating !== !!p.terminating) {
        ctx.pods.set(uid, { namespace: p.namespace, name: p.name, ip: p.ip, uid, terminating: !!p.terminating });
        changed = true;
      }
    }
    if (changed) ctx.podsChanged();
  }

  private onObject(spec: ResourceSpec, type: string, o: KubeObject, ts: number): void {
    const kind = type === 'BOOKMARK' ? 'BOOKMARK' : spec.kind;
    if (!this.relevance!.relevant(kind, o)) return;
    this.sink!.k8sObject(k8sRow(ts, type, spec.kind, o));
    this.rows++;
    if (spec.kind === 'Pod' || spec.kind === 'EndpointSlice') {
      const r = deriveKubeEvents(this.state, { type, object: o, kind: spec.kind }, ts);
      this.state = r.state;
      this.emit(r.events);
      if (spec.kind === 'Pod') this.syncPods();
    }
  }

  async start(sink: Sink, ctx: RecordContext): Promise<void> {
    this.sink = sink;
    this.ctx = ctx;
    if (!this.client || !this.target) {
      const pf = await this.preflight();
      if (!pf.ok) throw new Error(pf.detail);
    }
    this.relevance = new Relevance(this.target!);
    if (this.version) {
      // what the analysis needs to pick a preStop form the server supports (native sleep: 1.30+)
      sink.k8sObject({ ts_ns: nowNs(), kind: 'Version', namespace: null, name: 'kube-apiserver', uid: null, resource_version: null, event_type: 'LIST', object: JSON.stringify({ kind: 'Version', ...this.version }) });
      this.rows++;
    }
    const skipped: string[] = [];
    for (const spec of resourceSpecs(this.target!)) {
      const loop = new WatchLoop(this.client!, spec, {
        onObject: (type, o, ts) => this.onObject(spec, type, o, ts),
        onRelistDone: (items, ts) => {
          if (spec.kind !== 'Pod' && spec.kind !== 'EndpointSlice') return;
          const seen = new Set(items.map((o) => relistKey(spec.kind, o)));
          const r = endRelist(this.state, spec.kind, seen, ts);
          this.state = r.state;
          this.emit(r.events);
          if (spec.kind === 'Pod') this.syncPods();
        },
        onReconnect: (reason, rv, ts) => this.emit([ev('watch-reconnect', ts, 'kube', spec.kind, { resource: spec.kind, reason, resourceVersion: rv })]),
        onRelist: (reason, rv, ts) => this.emit([ev('watch-relist', ts, 'kube', spec.kind, { resource: spec.kind, reason, resourceVersion: rv })]),
        onBadLine: () => { this.bad++; sink.dropped('kube', 1); },
        onError: (e) => ctx.log(`kube: ${spec.kind} watch: ${e.message}`),
      });
      try {
        await loop.start();
        this.loops.push(loop);
      } catch (e) {
        if (e instanceof ApiError && (e.status === 403 || e.status === 404) && spec.kind !== 'Pod') {
          skipped.push(`${spec.kind} (${e.status})`);
          continue;
        }
        await this.stop();
        throw e;
      }
    }
    if (skipped.length) ctx.log(`kube: not watching ${skipped.join(', ')}: no access`);
  }

  async stop(): Promise<void> {
    await Promise.all(this.loops.map((l) => l.stop()));
    this.loops = [];
    this.client?.closeAll();
  }

  stats(): SourceStats {
    return { events: this.rows, dropped: this.bad, extra: `${Object.keys(this.state.pods).length} pods` };
  }
}

export function create(opts: RecordOptions): Source {
  return new KubeSource(opts);
}

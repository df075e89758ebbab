/**
 * rollout source: `--restart` patches the Deployment exactly like `kubectl rollout restart` (strategic
 * merge patch of spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"] = now,
 * RFC3339) once every other source runs; `--until-rollout-complete` watches the Deployment and its
 * pods and judges completion like `kubectl rollout status`, plus: no pod of the Deployment is still
 * terminating. Then it emits `rollout-complete` and asks the recorder to stop after --settle seconds.
 */
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { ev } from '../../../schemas/events.js';
import { KubeClient, loadKubeConfig, nowNs, WatchLoop } from '../kube/client.js';
import type { KubeObject } from '../kube/derive.js';
import { labelSelectorToString } from '../kube/selector.js';

/** Go's time.RFC3339 of a local instant ("2006-01-02T15:04:05Z07:00"): what kubectl writes. */
export function rfc3339Local(d: Date = new Date()): string {
  const p = (n: number) => String(Math.abs(n)).padStart(2, '0');
  const off = -d.getTimezoneOffset();
  const tz = off === 0 ? 'Z' : `${off > 0 ? '+' : '-'}${p(Math.trunc(off / 60))}:${p(off % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${tz}`;
}

/** The body `kubectl rollout restart` sends (strategic merge patch). */
export function restartPatch(at: string): object {
  return { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': at } } } } };
}

export interface DeploymentStatusView {
  done: boolean;
  reason: string;
}

/**
 * kubectl rollout status (DeploymentStatusViewer) plus: replicas == spec.replicas (no old pods left)
 * and no terminating pod of the Deployment.
 */
export function rolloutStatus(d: KubeObject, terminatingPods: number): DeploymentStatusView {
  const md = d.metadata as { generation?: number } | undefined;
  const spec = (d.spec ?? {}) as { replicas?: number };
  const st = (d.status ?? {}) as { observedGeneration?: number; replicas?: number; updatedReplicas?: number; availableReplicas?: number; conditions?: Array<{ type: string; reason?: string }> };
  const want = spec.replicas ?? 1;
  const gen = md?.generation ?? 0;
  const obs = st.observedGeneration ?? 0;
  const replicas = st.replicas ?? 0;
  const updated = st.updatedReplicas ?? 0;
  const available = st.availableReplicas ?? 0;
  if (obs < gen) return { done: false, reason: `waiting for the deployment spec update to be observed (generation ${gen}, observed ${obs})` };
  const prog = st.conditions?.find((c) => c.type === 'Progressing');
  if (prog?.reason === 'ProgressDeadlineExceeded') return { done: false, reason: 'progress deadline exceeded' };
  if (updated < want) return { done: false, reason: `${updated} of ${want} updated replicas` };
  if (replicas > updated) return { done: false, reason: `${replicas - updated} old replicas pending termination` };
  if (available < updated) return { done: false, reason: `${available} of ${updated} updated replicas available` };
  if (replicas !== want) return { done: false, reason: `${replicas} replicas, want ${want}` };
  if (terminatingPods > 0) return { done: false, reason: `${terminatingPods} pods still terminating` };
  return { done: true, reason: `${want} of ${want} updated replicas available, no old pod left` };
}

class RolloutSource implements Source {
  readonly name = 'rollout';
  private client: KubeClient | null = null;
  private loops: WatchLoop[] = [];
  private deployment: KubeObject | null = null;
  private terminating = new Map<string, boolean>();
  /** completion is judged only once the rollout has started (restart patched, or an incomplete state seen) */
  private armedGeneration: number | null = null;
  private sawIncomplete = false;
  private completed = false;
  private settleTimer: NodeJS.Timeout | null = null;
  private preRollTimer: NodeJS.Timeout | null = null;
  private events = 0;
  private sink: Sink | null = null;
  private ctx: RecordContext | null = null;
  lastReason = '';

  constructor(private opts: RecordOptions) {}

  private get ns(): string { return this.opts.namespace || 'default'; }
  private get dpath(): string {
    return `/apis/apps/v1/namespaces/${encodeURIComponent(this.ns)}/deployments/${encodeURIComponent(this.opts.deployment ?? '')}`;
  }

  async preflight(): Promise<Preflight> {
    const clock = 'receipt' as const;
    const o = this.opts;
    if (!o.restart && !o.untilRolloutComplete) return { ok: false, clock, detail: 'neither --restart nor --until-rollout-complete given' };
    if (!o.deployment) return { ok: false, clock, detail: '--restart and --until-rollout-complete need --deployment' };
    try {
      this.client = new KubeClient(loadKubeConfig(o.kubeconfig));
      this.deployment = await this.client.request('GET', this.dpath, undefined, undefined, 10000);
    } catch (e) {
      return { ok: false, clock, detail: `cannot read deployment ${this.ns}/${o.deployment}: ${(e as Error).message}` };
    }
    const what = [o.restart ? `restart it like \`kubectl rollout restart\`${(o.preRoll ?? 0) > 0 ? ` after ${o.preRoll} s of recording` : ''}` : '', o.untilRolloutComplete ? `stop ${o.settle} s after the rollout completes` : '']
      .filter(Boolean).join(', then ');
    return { ok: true, clock, detail: `deployment ${this.ns}/${o.deployment}: ${what}` };
  }

  async start(sink: Sink, ctx: RecordContext): Promise<void> {
    this.sink = sink;
    this.ctx = ctx;
    if (!this.client) {
      const pf = await this.preflight();
      if (!pf.ok) throw new Error(pf.detail);
    }
    const o = this.opts;
    if (o.untilRolloutComplete) {
      const spec = (this.deployment!.spec ?? {}) as { selector?: Parameters<typeof labelSelectorToString>[0] };
      const selector = labelSelectorToString(spec.selector);
      const ns = encodeURIComponent(this.ns);
      const dl = new WatchLoop(this.client!, { kind: 'Deployment', apiVersion: 'apps/v1', path: `/apis/apps/v1/namespaces/${ns}/deployments`, query: { fieldSelector: `metadata.name=${o.deployment}` } }, {
        onObject: (type, obj) => { if (type !== 'BOOKMARK' && type !== 'DELETED') { this.deployment = obj; this.judge(); } },
        onError: (e) => ctx.log(`rollout: deployment watch: ${e.message}`),
      });
      const pl = new WatchLoop(this.client!, { kind: 'Pod', apiVersion: 'v1', path: `/api/v1/namespaces/${ns}/pods`, query: selector ? { labelSelector: selector } : {} }, {
        onObject: (type, obj) => {
          if (type === 'BOOKMARK') return;
          const uid = obj.metadata?.uid ?? obj.metadata?.name ?? '';
          if (type === 'DELETED') this.terminating.delete(uid);
          else this.terminating.set(uid, !!obj.metadata?.deletionTimestamp);
          this.judge();
        },
        onRelistDone: (items) => {
          const seen = new Set(items.map((x) => x.metadata?.uid ?? x.metadata?.name ?? ''));
          for (const k of [...this.terminating.keys()]) if (!seen.has(k)) this.terminating.delete(k);
          this.judge();
        },
        onError: (e) => ctx.log(`rollout: pod watch: ${e.message}`),
      });
      await pl.start();
      this.loops.push(pl);
      await dl.start();
      this.loops.push(dl);
    }
    const preRoll = o.preRoll ?? 0;
    if (o.restart && preRoll > 0) {
      // a pre-roll: a connection opened before the capture began shows no SYN and no request, so one cut at
      // a SIGKILL could not be told from an idle one. Every source is live by now; the restart comes later.
      ctx.log(`rollout: recording ${preRoll} s before the restart (--pre-roll)`);
      this.preRollTimer = setTimeout(() => {
        this.preRollTimer = null;
        this.restart().catch((e: Error) => {
          ctx.sourceFailed?.(this.name, `restart of ${this.ns}/${o.deployment} failed: ${e.message}`);
          ctx.requestStop('the rollout restart failed');
        });
      }, preRoll * 1000);
      return;
    }
    if (o.restart) await this.restart();
    else this.armedGeneration = (this.deployment?.metadata as { generation?: number } | undefined)?.generation ?? 0;
    this.judge();
  }

  private async restart(): Promise<void> {
    const o = this.opts, sink = this.sink!;
    const at = rfc3339Local();
    const ts = nowNs();
    const d = await this.client!.request('PATCH', this.dpath, restartPatch(at), 'application/strategic-merge-patch+json');
    const gen = (d.metadata as { generation?: number } | undefined)?.generation ?? null;
    this.armedGeneration = gen;
    sink.event(ev('rollout-restart', ts, 'rollout', `${this.ns}/${o.deployment}`, {
      namespace: this.ns, deployment: o.deployment!, detail: `patched kubectl.kubernetes.io/restartedAt=${at}${gen !== null ? ` (generation ${gen})` : ''}`,
    }));
    this.events++;
    this.ctx?.log(`rollout: restarted deployment ${this.ns}/${o.deployment} (restartedAt=${at})`);
    this.judge();
  }

  private judge(): void {
    if (!this.opts.untilRolloutComplete || this.completed || !this.deployment || this.armedGeneration === null || !this.sink) return;
    const gen = (this.deployment.metadata as { generation?: number } | undefined)?.generation ?? 0;
    const terminating = [...this.terminating.values()].filter(Boolean).length;
    const st = rolloutStatus(this.deployment, terminating);
    this.lastReason = st.reason;
    if (!st.done) { this.sawIncomplete = true; return; }
    // without --restart, wait for a rollout someone else starts: a new generation or an incomplete state first
    if (!this.opts.restart && !this.sawIncomplete && gen <= this.armedGeneration) return;
    if (this.opts.restart && gen < this.armedGeneration) return;
    this.completed = true;
    const o = this.opts;
    this.sink.event(ev('rollout-complete', nowNs(), 'rollout', `${this.ns}/${o.deployment}`, { namespace: this.ns, deployment: o.deployment!, detail: st.reason }));
    this.events++;
    this.ctx?.log(`rollout: complete (${st.reason}); stopping in ${o.settle} s`);
    const ctx = this.ctx;
    this.settleTimer = setTimeout(() => ctx?.requestStop('rollout complete'), Math.max(0, o.settle) * 1000);
  }

  async stop(): Promise<void> {
    if (this.settleTimer) clearTimeout(this.settleTimer);
    if (this.preRollTimer) clearTimeout(this.preRollTimer);
    await Promise.all(this.loops.map((l) => l.stop()));
    this.loops = [];
    this.client?.closeAll();
  }

  stats(): SourceStats {
    return { events: this.events, dropped: 0, extra: this.completed ? 'complete' : this.lastReason || undefined };
  }
}

export function create(opts: RecordOptions): Source {
  return new RolloutSource(opts);
}

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startApiServer, Store, type ApiServer } from '../lab/apiserver/index.js';
import { writeKubeconfig } from '../lab/kubeconfig.js';
import { create as createKube } from '../recorder/sources/kube/index.js';
import { create as createRollout, rolloutStatus, restartPatch, rfc3339Local } from '../recorder/sources/rollout/index.js';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions, Source } from '../recorder/source.js';
import type { RtEvent } from '../schemas/events.js';
import type { K8sObjectRow, ProbeRequestRow } from '../schemas/rows.js';

const NS = `rec-kube-${Math.random().toString(36).slice(2, 8)}`;
let api: ApiServer;
let store: Store;
let dir: string;
let kubeconfig: string;

class MemSink implements Sink {
  events: RtEvent[] = [];
  k8s: K8sObjectRow[] = [];
  drops = 0;
  event(e: RtEvent) { this.events.push(e); }
  packet() {}
  conntrack() {}
  k8sObject(o: K8sObjectRow) { this.k8s.push(o); }
  nftSnapshot() {}
  probeRequest(_p: ProbeRequestRow) {}
  dropped(_s: string, n: number) { this.drops += n; }
}

function opts(extra: Partial<RecordOptions> = {}): RecordOptions {
  return {
    out: '/dev/null', kubeconfig, namespace: NS, iface: [], snaplen: 128, rate: 10, concurrency: 1, settle: 0,
    packets: false, strace: false, ebpf: false, nft: false, conntrack: false, kube: true, pid: [], ...extra,
  };
}

function ctxFor(o: RecordOptions) {
  const logs: string[] = [];
  const stops: string[] = [];
  let podsChanged = 0;
  const ctx: RecordContext = {
    opts: o, pods: new Map(), onPodsChanged() {}, podsChanged() { podsChanged++; },
    requestStop(r) { stops.push(r); }, log(l) { logs.push(l); },
  };
  return { ctx, logs, stops, get podsChanged() { return podsChanged; } };
}

async function until(what: string, f: () => boolean, ms = 5000): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function pod(name: string, app: string, ip: string) {
  return {
    metadata: { name, namespace: NS, labels: { app, 'pod-template-hash': 'abc' } },
    spec: { nodeName: 'rec-kube-node', containers: [{ name: 'c', image: 'x' }], terminationGracePeriodSeconds: 30 },
    status: { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rec-kube-'));
  store = new Store({ nodeName: 'rec-kube-node' });
  api = await startApiServer(store, { host: '127.0.0.1', port: 0, bookmarkIntervalMs: 60_000 });
  kubeconfig = writeKubeconfig(join(dir, 'kubeconfig'), api.url);
  store.create('namespaces', { metadata: { name: NS } });
  store.create('deployments', {
    metadata: { name: 'web', namespace: NS },
    spec: { replicas: 1, selector: { matchLabels: { app: 'web' } }, template: { metadata: { labels: { app: 'web' } }, spec: { containers: [{ name: 'c', image: 'x' }] } } },
  }, NS);
  store.create('pods', pod('web-a', 'web', '10.244.0.5'), NS);
  store.create('pods', pod('other-a', 'other', '10.244.0.9'), NS);
  store.create('services', { metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] } }, NS);
  store.create('services', { metadata: { name: 'other', namespace: NS }, spec: { selector: { app: 'other' }, ports: [{ port: 80 }] } }, NS);
  store.create('poddisruptionbudgets', { metadata: { name: 'web', namespace: NS }, spec: { maxUnavailable: 1, selector: { matchLabels: { app: 'web' } } } }, NS);
  store.create('poddisruptionbudgets', { metadata: { name: 'other', namespace: NS }, spec: { minAvailable: 1, selector: { matchExpressions: [{ key: 'app', operator: 'In', values: ['other'] }] } } }, NS);
  const a = store.get('pods', NS, 'web-a')!;
  store.create('endpointslices', {
    metadata: { name: 'web-abc12', namespace: NS, labels: { 'kubernetes.io/service-name': 'web' } },
    addressType: 'IPv4', ports: [{ name: '', port: 8080, protocol: 'TCP' }],
    endpoints: [{ addresses: ['10.244.0.5'], conditions: { ready: true, serving: true, terminating: false }, targetRef: { kind: 'Pod', name: 'web-a', namespace: NS, uid: a.metadata.uid } }],
  }, NS);
});

afterAll(async () => {
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('kube source against the lab API server', () => {
  let src: Source;
  const sink = new MemSink();
  const o = () => opts({ deployment: 'web' });
  let c: ReturnType<typeof ctxFor>;

  it('preflight resolves the deployment selector', async () => {
    src = createKube(o());
    c = ctxFor(o());
    const pf = await src.preflight(c.ctx);
    expect(pf.ok).toBe(true);
    expect(pf.clock).toBe('receipt');
    expect(pf.detail).toContain('app=web');
  });

  it('LISTs every resource narrowed to the deployment, then watches in order', async () => {
    await src.start(sink, c.ctx);
    const listed = sink.k8s.filter((r) => r.event_type === 'LIST').map((r) => `${r.kind}/${r.name}`).sort();
    // the PDB selecting the followed pods (not the other one), and the API server's /version
    expect(listed).toEqual(['Deployment/web', 'EndpointSlice/web-abc12', 'Pod/web-a', 'PodDisruptionBudget/web', 'Service/web', 'Version/kube-apiserver']);
    expect(JSON.parse(sink.k8s.find((r) => r.kind === 'Version')!.object)).toMatchObject({ kind: 'Version', gitVersion: expect.stringMatching(/^v1\.\d+/) });
    expect(sink.k8s.every((r) => (r.resource_version || r.kind === 'Version') && r.ts_ns > 1.6e18)).toBe(true);
    expect([...c.ctx.pods.values()].map((p) => `${p.name} ${p.ip}`)).toEqual(['web-a 10.244.0.5']);
    expect(c.podsChanged).toBeGreaterThan(0);

    store.create('pods', { ...pod('web-b', 'web', '10.244.0.6'), status: { phase: 'Pending', conditions: [] } }, NS);
    store.mutate('pods', NS, 'web-b', (p) => { p.status = { phase: 'Running', podIP: '10.244.0.6', conditions: [{ type: 'Ready', status: 'True' }] }; });
    store.delete('pods', NS, 'web-a', { gracePeriodSeconds: 30 });
    store.create('pods', pod('other-b', 'other', '10.244.0.10'), NS);
    store.create('events', { metadata: { name: 'web-a.1', namespace: NS }, involvedObject: { kind: 'Pod', name: 'web-a', namespace: NS }, reason: 'Killing', message: 'Stopping container c', type: 'Normal' }, NS);
    await until('pod-terminating', () => sink.events.some((e) => e.kind === 'pod-terminating'));
    await until('event row', () => sink.k8s.some((r) => r.kind === 'Event'));
    const watched = sink.k8s.filter((r) => r.event_type !== 'LIST' && r.kind === 'Pod').map((r) => `${r.event_type} ${r.name}`);
    expect(watched).toEqual(['ADDED web-b', 'MODIFIED web-b', 'MODIFIED web-a']);
    const rvs = sink.k8s.filter((r) => r.event_type !== 'LIST' && r.kind === 'Pod').map((r) => Number(r.resource_version));
    expect([...rvs].sort((x, y) => x - y)).toEqual(rvs);
    expect(sink.events.map((e) => `${e.kind} ${e.subject}`)).toEqual([
      `pod-created ${NS}/web-b`, `pod-ready ${NS}/web-b`, `pod-terminating ${NS}/web-a`,
    ]);
    expect(sink.k8s.some((r) => r.name === 'other-b' || r.name === 'other')).toBe(false);
    expect(c.ctx.pods.size).toBe(2);
  });

  it('reconnects from the last resourceVersion after the watches are cut, losing nothing', async () => {
    const cut = api.faults.cutWatches();
    expect(cut).toBeGreaterThanOrEqual(7);
    store.mutate('endpointslices', NS, 'web-abc12', (s) => { s.endpoints[0].conditions = { ready: false, serving: true, terminating: true }; });
    await until('reconnects', () => sink.events.filter((e) => e.kind === 'watch-reconnect').length >= 7);
    await until('slice change', () => sink.events.some((e) => e.kind === 'endpoint-changed'));
    const ch = sink.events.find((e) => e.kind === 'endpoint-changed')!;
    expect(ch.attrs).toMatchObject({ change: 'modified', ip: '10.244.0.5', terminating: true, ready: false, pod: 'web-a', service: 'web' });
    const rec = sink.events.filter((e) => e.kind === 'watch-reconnect').map((e) => (e.attrs as { resource: string }).resource).sort();
    expect(rec).toEqual(['Deployment', 'EndpointSlice', 'Event', 'Pod', 'PodDisruptionBudget', 'ReplicaSet', 'Service']);
    expect(sink.events.some((e) => e.kind === 'watch-relist')).toBe(false);
  });

  it('relists with a marker after 410 Expired, and closes what vanished meanwhile', async () => {
    const before = sink.k8s.length;
    api.faults.expireWatches(7);
    api.faults.cutWatches();
    store.delete('pods', NS, 'web-a', { gracePeriodSeconds: 0 });
    await until('relist markers', () => sink.events.filter((e) => e.kind === 'watch-relist').length >= 7, 8000);
    await until('pod-deleted', () => sink.events.some((e) => e.kind === 'pod-deleted'));
    const relisted = sink.k8s.slice(before).filter((r) => r.event_type === 'RELIST').map((r) => `${r.kind}/${r.name}`);
    expect(relisted).toContain('Pod/web-b');
    expect(sink.events.find((e) => e.kind === 'pod-deleted')!.subject).toBe(`${NS}/web-a`);
    expect([...c.ctx.pods.values()].map((p) => p.name)).toEqual(['web-b']);
    // the watch goes on after the relist
    store.mutate('pods', NS, 'web-b', (p) => { p.metadata.labels.extra = 'yes'; });
    await until('post-relist watch event', () => sink.k8s.some((r) => r.event_type === 'MODIFIED' && r.name === 'web-b' && r.object.includes('"extra"')));
    await src.stop();
  });
});

describe('rollout source', () => {
  it('patches the deployment exactly like kubectl rollout restart', async () => {
    const o = opts({ deployment: 'web', restart: true });
    const src = createRollout(o);
    const c = ctxFor(o);
    const sink = new MemSink();
    const pf = await src.preflight(c.ctx);
    expect(pf.ok).toBe(true);
    const genBefore = store.get('deployments', NS, 'web')!.metadata.generation;
    await src.start(sink, c.ctx);
    await src.stop();
    const d = store.get('deployments', NS, 'web')!;
    const at = d.spec.template.metadata.annotations['kubectl.kubernetes.io/restartedAt'];
    expect(at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$/);
    expect(d.metadata.generation).toBe(genBefore + 1);
    expect(sink.events.map((e) => e.kind)).toEqual(['rollout-restart']);
  });

  it('judges completion like kubectl rollout status, plus no terminating pod', () => {
    const d = (st: object, gen = 2) => ({ metadata: { generation: gen }, spec: { replicas: 2 }, status: st });
    expect(rolloutStatus(d({ observedGeneration: 1 }), 0).done).toBe(false);
    expect(rolloutStatus(d({ observedGeneration: 2, replicas: 3, updatedReplicas: 2, availableReplicas: 2 }), 0).reason).toMatch(/old replicas/);
    expect(rolloutStatus(d({ observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 1 }), 0).done).toBe(false);
    expect(rolloutStatus(d({ observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 }), 1).reason).toMatch(/terminating/);
    expect(rolloutStatus(d({ observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 }), 0).done).toBe(true);
    expect(restartPatch('x')).toEqual({ spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': 'x' } } } } });
    expect(rfc3339Local(new Date(0))).toMatch(/^19(69|70)-/);
  });

  it('emits rollout-complete and requests a stop once the deployment status says so', async () => {
    const o = opts({ deployment: 'web', untilRolloutComplete: true, settle: 0 });
    const src = createRollout(o);
    const c = ctxFor(o);
    const sink = new MemSink();
    expect((await src.preflight(c.ctx)).ok).toBe(true);
    await src.start(sink, c.ctx);
    // a rollout someone else started: new generation, then the status catching up
    store.patch('deployments', NS, 'web', 'strategic', restartPatch('2026-01-01T00:00:00Z'));
    const gen = store.get('deployments', NS, 'web')!.metadata.generation;
    store.mutate('deployments', NS, 'web', (x) => { x.status = { observedGeneration: gen, replicas: 2, updatedReplicas: 1, availableReplicas: 1 }; });
    await new Promise((r) => setTimeout(r, 200));
    expect(sink.events.length).toBe(0);
    store.mutate('deployments', NS, 'web', (x) => { x.status = { observedGeneration: gen, replicas: 1, updatedReplicas: 1, availableReplicas: 1 }; });
    await until('stop request', () => c.stops.length > 0);
    expect(sink.events.map((e) => e.kind)).toEqual(['rollout-complete']);
    expect(c.stops).toEqual(['rollout complete']);
    await src.stop();
  });
});

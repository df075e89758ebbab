/**
 * The lab's controllers: scheduler, Deployment (rolling update), ReplicaSet, EndpointSlice, events.
 * The rolling update runs against the HTTP API with a simulated kubelet written with client-node
 * (marks pods Running/Ready with an IP, completes deletions), like the node side will.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { makeDeployment, makeService, rolloutComplete, startControlPlane, type ControlPlane } from '../lab/controlplane.js';
import { Store } from '../lab/apiserver/store.js';
import { startControllers } from '../lab/controllers/index.js';
import { resolveFenceposts, podTemplateHash } from '../lab/controllers/deployment.js';
import { rfc3339 } from '../lab/apiserver/util.js';
import { nowNs } from '../lab/sys.js';

const NODE = 'lab-ctl-node';
const FIXTURE = join(import.meta.dirname, '..', 'fixtures', 'watch', 'rollout-watch.jsonl');

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A minimal kubelet over HTTP: pods bound to its node become Running/Ready with an IP; deletions complete. */
class SimKubelet {
  private ctl?: AbortController;
  private seen = new Set<string>();
  private ending = new Set<string>();
  private nextIp = 10;
  private timers = new Set<NodeJS.Timeout>();
  private core: k8s.CoreV1Api;
  constructor(private kc: k8s.KubeConfig, private node: string, private readyDelayMs = 60, private terminateDelayMs = 300) {
    this.core = kc.makeApiClient(k8s.CoreV1Api);
  }
  async start(): Promise<void> {
    const fieldSelector = `spec.nodeName=${this.node}`;
    const list = await this.core.listPodForAllNamespaces({ fieldSelector });
    for (const p of list.items) this.handle(p as any);
    this.ctl = await new k8s.Watch(this.kc).watch('/api/v1/pods', { fieldSelector, resourceVersion: list.metadata?.resourceVersion }, (_t, o) => this.handle(o), () => {});
  }
  private later(ms: number, fn: () => Promise<unknown>) {
    const t = setTimeout(() => { this.timers.delete(t); fn().catch(() => {}); }, ms);
    this.timers.add(t);
  }
  private handle(p: any) {
    const key = `${p.metadata.namespace}/${p.metadata.name}/${p.metadata.uid}`;
    if (p.metadata.deletionTimestamp) {
      if (this.ending.has(key)) return;
      this.ending.add(key);
      this.later(this.terminateDelayMs, () => this.core.deleteNamespacedPod({ namespace: p.metadata.namespace, name: p.metadata.name, gracePeriodSeconds: 0 }));
      return;
    }
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const ip = `10.244.0.${this.nextIp++}`;
    this.later(this.readyDelayMs, () => this.core.patchNamespacedPodStatus({
      namespace: p.metadata.namespace, name: p.metadata.name,
      body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], hostIP: '10.0.0.1', startTime: rfc3339(),
        conditions: [{ type: 'Initialized', status: 'True' }, { type: 'ContainersReady', status: 'True', lastTransitionTime: rfc3339() }, { type: 'Ready', status: 'True', lastTransitionTime: rfc3339() }] } },
    }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch)));
  }
  stop() {
    this.ctl?.abort();
    for (const t of this.timers) clearTimeout(t);
  }
}

describe('rolling update through the HTTP API', () => {
  let cp: ControlPlane;
  let dir: string;
  let kc: k8s.KubeConfig;
  let kubelet: SimKubelet;
  const capture: { ts: number; type: string; object: any }[] = [];
  const ctls: AbortController[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lab-ctl-'));
    cp = await startControlPlane({ nodeName: NODE, kubeconfigPath: join(dir, 'kubeconfig'), namespace: 'default', endpointDelayMs: 30 });
    kc = new k8s.KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath!);
    kubelet = new SimKubelet(kc, NODE);
    await kubelet.start();
  });
  afterAll(async () => {
    kubelet?.stop();
    for (const c of ctls) c.abort();
    await cp?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('rolls from the old ReplicaSet to the new one within maxSurge, and the slice goes ready -> terminating(serving) -> removed', async () => {
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const apps = kc.makeApiClient(k8s.AppsV1Api);
    const disc = kc.makeApiClient(k8s.DiscoveryV1Api);
    const rv = cp.store.resourceVersion();
    for (const path of ['/api/v1/namespaces/default/pods', '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', '/apis/apps/v1/namespaces/default/deployments']) {
      ctls.push(await new k8s.Watch(kc).watch(path, { resourceVersion: rv }, (type, object) => capture.push({ ts: nowNs(), type, object }), () => {}));
    }
    await core.createNamespacedService({ namespace: 'default', body: makeService({ name: 'web', clusterIP: '10.96.0.50', port: 80, targetPort: 8080, selector: { app: 'web' } }) });
    await apps.createNamespacedDeployment({ namespace: 'default', body: makeDeployment({
      name: 'web', replicas: 2, labels: { app: 'web' }, port: 8080, readinessProbe: { path: '/ready', port: 8080, periodSeconds: 1 },
      preStopSleepSeconds: 2, terminationGracePeriodSeconds: 10,
    }) });
    const sliceReady = async (n: number, names?: string[]) => {
      const s = (await disc.listNamespacedEndpointSlice({ namespace: 'default', labelSelector: 'kubernetes.io/service-name=web' })).items;
      const eps = s[0]?.endpoints ?? [];
      return s.length === 1 && eps.length === n && eps.every((e) => e.conditions?.ready) && (!names || eps.every((e) => names.includes(e.targetRef!.name!)));
    };
    await until(async () => rolloutComplete(await apps.readNamespacedDeployment({ namespace: 'default', name: 'web' }) as any) && await sliceReady(2), 'initial rollout');

    const rs1 = (await apps.listNamespacedReplicaSet({ namespace: 'default' })).items;
    expect(rs1).toHaveLength(1);
    const oldRS = rs1[0]!;
    const hash = oldRS.metadata!.labels!['pod-template-hash']!;
    expect(oldRS.metadata!.name).toBe(`web-${hash}`);
    expect(oldRS.spec!.selector.matchLabels).toEqual({ app: 'web', 'pod-template-hash': hash });
    const oldPods = (await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
    expect(oldPods).toHaveLength(2);
    for (const p of oldPods) {
      expect(p.metadata!.name).toMatch(new RegExp(`^web-${hash}-[a-z0-9]{5}$`));
      expect(p.metadata!.ownerReferences).toEqual([expect.objectContaining({ kind: 'ReplicaSet', name: oldRS.metadata!.name, uid: oldRS.metadata!.uid, controller: true })]);
      expect(p.spec!.nodeName).toBe(NODE);
      expect(p.spec!.terminationGracePeriodSeconds).toBe(10);
      expect(p.spec!.containers[0]!.lifecycle?.preStop?.sleep?.seconds).toBe(2);
      expect(p.spec!.containers[0]!.readinessProbe?.httpGet?.path).toBe('/ready');
      expect(p.metadata!.labels).toEqual({ app: 'web', 'pod-template-hash': hash });
    }
    const oldNames = oldPods.map((p) => p.metadata!.name!);
    const startIdx = capture.length;

    // kubectl rollout restart
    await apps.patchNamespacedDeployment({ namespace: 'default', name: 'web', body: { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': new Date().toISOString() } } } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch));
    await until(async () => {
      const d = await apps.readNamespacedDeployment({ namespace: 'default', name: 'web' });
      const pods = (await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })).items;
      return d.status?.observedGeneration === 2 && rolloutComplete(d as any) && pods.length === 2 && pods.every((p) => !oldNames.includes(p.metadata!.name!))
        && await sliceReady(2, pods.map((p) => p.metadata!.name!));
    }, 'rollout after restart');
    await new Promise((r) => setTimeout(r, 100)); // let the watches deliver the last events

    const rss = (await apps.listNamespacedReplicaSet({ namespace: 'default' })).items;
    expect(rss).toHaveLength(2);
    const newRS = rss.find((r) => r.metadata!.name !== oldRS.metadata!.name)!;
    expect(newRS.spec!.replicas).toBe(2);
    expect(rss.find((r) => r.metadata!.name === oldRS.metadata!.name)!.spec!.replicas).toBe(0);
    expect(newRS.metadata!.annotations!['deployment.kubernetes.io/revision']).toBe('2');
    const d = await apps.readNamespacedDeployment({ namespace: 'default', name: 'web' });
    expect(d.status).toMatchObject({ replicas: 2, updatedReplicas: 2, readyReplicas: 2, availableReplicas: 2, observedGeneration: 2 });
    expect(d.status!.conditions!.find((c) => c.type === 'Available')).toMatchObject({ status: 'True', reason: 'MinimumReplicasAvailable' });
    expect(d.status!.conditions!.find((c) => c.type === 'Progressing')).toMatchObject({ status: 'True', reason: 'NewReplicaSetAvailable' });

    // replay the pods watch: never more than replicas+maxSurge (3) pods that are not terminating, and
    // (maxUnavailable 0) never fewer than 2 ready non-terminating pods once the first rollout was done
    const pods = new Map<string, any>();
    let maxActive = 0, minReady = Infinity;
    for (const [i, ev] of capture.entries()) {
      if (ev.object.kind !== 'Pod') continue;
      if (ev.type === 'DELETED') pods.delete(ev.object.metadata.name);
      else pods.set(ev.object.metadata.name, ev.object);
      const active = [...pods.values()].filter((p) => !p.metadata.deletionTimestamp);
      maxActive = Math.max(maxActive, active.length);
      if (i >= startIdx) minReady = Math.min(minReady, active.filter((p) => p.status?.conditions?.some((c: any) => c.type === 'Ready' && c.status === 'True')).length);
    }
    expect(maxActive).toBe(3); // the surge was used, and never exceeded
    expect(minReady).toBe(2);

    // the old pods' endpoints in the slice: ready -> terminating (still serving) -> removed
    for (const name of oldNames) {
      const states: string[] = [];
      for (const ev of capture) {
        if (ev.object.kind !== 'EndpointSlice' || ev.type === 'DELETED') continue;
        const ep = (ev.object.endpoints ?? []).find((e: any) => e.targetRef?.name === name);
        const s = !ep ? (states.length ? 'removed' : '') : ep.conditions.ready ? 'ready'
          : ep.conditions.terminating && ep.conditions.serving ? 'terminating(serving)' : ep.conditions.terminating ? 'terminating' : 'not-ready';
        if (s && states[states.length - 1] !== s) states.push(s);
      }
      expect(states, name).toEqual(['ready', 'terminating(serving)', 'removed']);
    }
    const slice = (await disc.listNamespacedEndpointSlice({ namespace: 'default' })).items[0]!;
    expect(slice.metadata!.name).toMatch(/^web-[a-z0-9]{5}$/);
    expect(slice.metadata!.labels).toMatchObject({ 'kubernetes.io/service-name': 'web', 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' });
    expect(slice.addressType).toBe('IPv4');
    expect(slice.ports).toEqual([{ name: 'http', port: 8080, protocol: 'TCP' }]);
    expect(slice.endpoints[0]).toMatchObject({ nodeName: NODE, targetRef: { kind: 'Pod', namespace: 'default' }, conditions: { ready: true, serving: true, terminating: false } });
    expect(slice.endpoints[0]!.addresses[0]).toMatch(/^10\.244\.0\.\d+$/);

    const events = (await core.listNamespacedEvent({ namespace: 'default' })).items;
    const reasons = (r: string) => events.filter((e) => e.reason === r);
    expect(reasons('ScalingReplicaSet').map((e) => e.message)).toEqual(expect.arrayContaining([
      `Scaled up replica set ${oldRS.metadata!.name} from 0 to 2`, `Scaled up replica set ${newRS.metadata!.name} from 0 to 1`,
      `Scaled down replica set ${oldRS.metadata!.name} from 2 to 1`, `Scaled down replica set ${oldRS.metadata!.name} from 1 to 0`,
    ]));
    expect(reasons('Scheduled').length).toBe(4);
    expect(reasons('Killing').map((e) => e.involvedObject.name).sort()).toEqual([...oldNames].sort());
    expect(reasons('Killing')[0]!.message).toBe('Stopping container app');

    // timestamps strictly usable by the recorder: ns since epoch, non-decreasing
    for (let i = 1; i < capture.length; i++) expect(capture[i]!.ts).toBeGreaterThanOrEqual(capture[i - 1]!.ts);
    if (process.env.ROLLTRACE_CAPTURE_FIXTURES) {
      writeFileSync(FIXTURE, capture.map((c) => JSON.stringify(c)).join('\n') + '\n');
    }
  });
});

describe('controllers in-process', () => {
  const pod = (name: string, labels: Record<string, string>) => ({ metadata: { name, labels }, spec: { containers: [{ name: 'c', image: 'i', ports: [{ name: 'web', containerPort: 9090 }] }] } });
  const markReady = (s: Store, name: string, ip: string, readySinceMs = Date.now()) =>
    s.mutate('pods', 'default', name, (p) => { p.status = { phase: 'Running', podIP: ip, conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: rfc3339(readySinceMs) }] }; });
  const settle = (ms = 80) => new Promise((r) => setTimeout(r, ms));

  it('resolves maxSurge/maxUnavailable like Kubernetes', () => {
    const f = (replicas: number, maxSurge?: string | number, maxUnavailable?: string | number) =>
      resolveFenceposts({ spec: { replicas, strategy: { rollingUpdate: { maxSurge, maxUnavailable } } } });
    expect(f(2)).toEqual({ maxSurge: 1, maxUnavailable: 0 });
    expect(f(10)).toEqual({ maxSurge: 3, maxUnavailable: 2 });
    expect(f(4, '0%', '0%')).toEqual({ maxSurge: 0, maxUnavailable: 1 });
    expect(f(3, 2, '50%')).toEqual({ maxSurge: 2, maxUnavailable: 1 });
    const t = { metadata: { labels: { app: 'a' } }, spec: { containers: [{ name: 'c' }] } };
    expect(podTemplateHash(t)).toMatch(/^[bcdfghjklmnpqrstvwxz2456789]{6,10}$/);
    expect(podTemplateHash(t)).toBe(podTemplateHash(structuredClone(t)));
    expect(podTemplateHash({ ...t, metadata: { labels: { app: 'b' } } })).not.toBe(podTemplateHash(t));
  });

  it('scheduler binds pods; ReplicaSet scale-down deletes not-ready first, then the most recently ready, gracefully', async () => {
    const s = new Store({ nodeName: 'n1' });
    const c = startControllers(s, { nodeName: 'n1', endpointDelayMs: 10 });
    try {
      s.create('replicasets', { metadata: { name: 'rs1' }, spec: { replicas: 3, selector: { matchLabels: { app: 'r' } }, template: { metadata: { labels: { app: 'r' } }, spec: { containers: [{ name: 'c', image: 'i' }], terminationGracePeriodSeconds: 7 } } } });
      await until(() => s.list('pods').items.filter((p) => p.spec.nodeName).length === 3, 'three bound pods');
      const pods = s.list('pods').items;
      expect(pods).toHaveLength(3);
      expect(pods.every((p) => p.spec.nodeName === 'n1' && p.status.conditions?.some((x: any) => x.type === 'PodScheduled'))).toBe(true);
      const [a, b, cc] = pods.map((p) => p.metadata.name as string);
      markReady(s, a!, '10.0.0.1', Date.now() - 100_000);
      markReady(s, cc!, '10.0.0.3', Date.now() - 10_000);
      await until(() => s.get('replicasets', 'default', 'rs1')!.status.readyReplicas === 2, 'rs status');
      expect(s.get('replicasets', 'default', 'rs1')!.status).toMatchObject({ replicas: 3, readyReplicas: 2, availableReplicas: 2 });
      s.mutate('replicasets', 'default', 'rs1', (r) => { r.spec.replicas = 1; });
      await until(() => s.get('replicasets', 'default', 'rs1')!.status.replicas === 1, 'scale-down');
      const after = s.list('pods').items;
      const terminating = after.filter((p) => p.metadata.deletionTimestamp).map((p) => p.metadata.name).sort();
      expect(terminating).toEqual([b, cc].sort());
      expect(after.find((p) => p.metadata.name === b)!.metadata.deletionGracePeriodSeconds).toBe(7);
      expect(s.get('replicasets', 'default', 'rs1')!.status).toMatchObject({ replicas: 1, readyReplicas: 1 });
    } finally {
      c.stop();
    }
  });

  it('EndpointSlice controller batches changes within its delay, resolves named ports, drops gone pods and orphaned slices', async () => {
    const s = new Store({ nodeName: 'n1' });
    const c = startControllers(s, { nodeName: 'n1', endpointDelayMs: 150 });
    const sliceRuns = () => sliceChanges.length;
    const sliceChanges: string[] = [];
    s.subscribe((ch) => { if (ch.resource === 'endpointslices') sliceChanges.push(`${ch.type} ${(ch.object.endpoints ?? []).length}`); });
    try {
      s.create('services', { metadata: { name: 'svc', labels: { team: 'x' } }, spec: { selector: { app: 'e' }, ports: [{ name: 'p', port: 80, targetPort: 'web' }] } });
      s.create('services', { metadata: { name: 'manual' }, spec: { ports: [{ port: 81 }] } });
      for (const n of ['e1', 'e2', 'e3']) s.create('pods', pod(n, { app: 'e' }));
      s.create('pods', pod('other', { app: 'x' }));
      // all in one tick: the scheduler (0 ms timer) binds before the slice controller's 150 ms batch runs
      markReady(s, 'e1', '10.1.0.1'); markReady(s, 'e2', '10.1.0.2'); markReady(s, 'e3', '10.1.0.3'); markReady(s, 'other', '10.1.0.9');
      await until(() => sliceRuns() >= 1, 'first slice');
      await settle(300);
      expect(sliceChanges).toEqual(['ADDED 3']);
      const slice = s.list('endpointslices').items[0]!;
      expect(slice.metadata.labels).toMatchObject({ team: 'x', 'kubernetes.io/service-name': 'svc' });
      expect(slice.metadata.annotations['endpoints.kubernetes.io/last-change-trigger-time']).toMatch(/^\d{4}-/);
      expect(slice.ports).toEqual([{ name: 'p', port: 9090, protocol: 'TCP' }]);
      expect(slice.endpoints.map((e: any) => e.addresses[0])).toEqual(['10.1.0.1', '10.1.0.2', '10.1.0.3']);
      // three changes in one tick -> one update
      s.delete('pods', 'default', 'e1'); // graceful: terminating
      s.mutate('pods', 'default', 'e2', (p) => { p.status.conditions.find((x: any) => x.type === 'Ready').status = 'False'; });
      s.delete('pods', 'default', 'e3', { gracePeriodSeconds: 0 });
      await until(() => sliceRuns() >= 2, 'slice update');
      await settle(300);
      expect(sliceChanges).toEqual(['ADDED 3', 'MODIFIED 2']);
      const eps = s.list('endpointslices').items[0]!.endpoints;
      expect(eps.map((e: any) => [e.targetRef.name, e.conditions])).toEqual([
        ['e1', { ready: false, serving: true, terminating: true }],
        ['e2', { ready: false, serving: false, terminating: false }],
      ]);
      s.delete('services', 'default', 'svc');
      await until(() => s.list('endpointslices').items.length === 0, 'orphaned slice removed');
    } finally {
      c.stop();
    }
  });
});

describe('fixtures/watch/rollout-watch.jsonl', () => {
  it('is a real watch capture of a rolling update in the `import --watch` format', () => {
    const lines = readFileSync(FIXTURE, 'utf8').split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(20);
    const evs = lines.map((l) => JSON.parse(l));
    const kinds = new Set(evs.map((e) => e.object.kind));
    expect([...kinds].sort()).toEqual(['Deployment', 'EndpointSlice', 'Pod']);
    let prev = 0;
    for (const e of evs) {
      expect(['ADDED', 'MODIFIED', 'DELETED']).toContain(e.type);
      expect(e.ts).toBeGreaterThan(1.6e18);
      expect(e.ts).toBeGreaterThanOrEqual(prev);
      prev = e.ts;
      expect(e.object.metadata.resourceVersion).toMatch(/^\d+$/);
    }
    const eps = evs.filter((e) => e.object.kind === 'EndpointSlice').flatMap((e) => e.object.endpoints ?? []);
    expect(eps.some((ep: any) => ep.conditions.terminating && ep.conditions.serving && !ep.conditions.ready)).toBe(true);
    expect(evs.filter((e) => e.object.kind === 'Pod' && e.type === 'DELETED').length).toBe(2);
    expect(evs.some((e) => e.object.kind === 'Pod' && e.object.metadata.deletionTimestamp && e.type === 'MODIFIED')).toBe(true);
  });
});

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyBundle } from '../analyzer/commands/verify.js';
import { makeDeployment, startControlPlane, type ControlPlane } from '../lab/controlplane.js';
import { runRecord } from '../recorder/record.js';

const NS = 'default';
const NODE = `rec-record-node-${Math.random().toString(36).slice(2, 6)}`;
let cp: ControlPlane;
let dir: string;
let kubelet: NodeJS.Timeout;
let ipSeq = 10;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'rec-record-ro-'));
  cp = await startControlPlane({ host: '127.0.0.1', port: 0, nodeName: NODE, kubeconfigPath: join(dir, 'kubeconfig'), killingEvents: false });
  cp.store.create('deployments', makeDeployment({ name: 'web', replicas: 2, labels: { app: 'web' }, port: 8080, maxSurge: 1, maxUnavailable: 0 }), NS);
  cp.store.create('services', { metadata: { name: 'web', namespace: NS }, spec: { selector: { app: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } }, NS);
  // a stand-in kubelet: scheduled pods become Running+Ready with an IP; terminating pods go away after 150 ms
  const dying = new Map<string, number>();
  kubelet = setInterval(() => {
    for (const p of cp.store.list('pods', { namespace: NS }).items) {
      if (p.metadata.deletionTimestamp) {
        const since = dying.get(p.metadata.uid) ?? Date.now();
        dying.set(p.metadata.uid, since);
        if (Date.now() - since > 150) { try { cp.store.delete('pods', NS, p.metadata.name, { gracePeriodSeconds: 0 }); } catch { /* gone */ } }
      } else if (p.spec?.nodeName && !p.status?.podIP) {
        cp.store.mutate('pods', NS, p.metadata.name, (x) => {
          x.status = { ...(x.status ?? {}), phase: 'Running', podIP: `10.244.9.${ipSeq++}`, conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: new Date().toISOString() }], containerStatuses: [{ name: 'app', ready: true, started: true, restartCount: 0, image: 'x', imageID: 'x', state: { running: { startedAt: new Date().toISOString() } } }] };
        }, 'status');
      }
    }
  }, 30);
  // wait for the initial rollout
  const t0 = Date.now();
  for (;;) {
    const d = cp.store.get('deployments', NS, 'web')!;
    if ((d.status?.availableReplicas ?? 0) === 2 && cp.store.list('pods', { namespace: NS }).items.length === 2) break;
    if (Date.now() - t0 > 15000) throw new Error(`initial rollout did not complete: ${JSON.stringify(d.status)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(async () => {
  clearInterval(kubelet);
  await cp?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('record --restart --until-rollout-complete against the lab control plane', () => {
  it('restarts the deployment, follows the rollout and stops after it completes', async () => {
    const out = join(dir, 'rollout.rtb');
    const oldPods = cp.store.list('pods', { namespace: NS }).items.map((p) => p.metadata.name).sort();
    process.env.NODE_NAME = NODE; // as the downward API sets it in a DaemonSet pod
    const code = await runRecord({
      out, kubeconfig: cp.kubeconfigPath, namespace: NS, deployment: 'web', restart: true, untilRolloutComplete: true, settle: 0.3,
      duration: 40, packets: false, strace: false, ebpf: false, nft: false, conntrack: false, quiet: true,
    }, { statusMode: 'quiet' }).finally(() => { delete process.env.NODE_NAME; });
    expect(code).toBe(0);
    const v = await verifyBundle(out);
    expect(v.valid && v.closedCleanly).toBe(true);
    const s = Object.fromEntries(v.sources.map((x) => [x.name, x]));
    expect(s.rollout!.status).toBe('ok');
    expect(s.kube!.status).toBe('ok');
    const db = new Database(out, { readonly: true });
    try {
      const evs = db.prepare('select ts_ns, kind, subject, attrs from events order by id').all() as Array<{ ts_ns: number; kind: string; subject: string; attrs: string }>;
      const kinds = evs.map((e) => e.kind);
      const restart = kinds.indexOf('rollout-restart');
      const complete = kinds.indexOf('rollout-complete');
      expect(restart).toBeGreaterThanOrEqual(0);
      expect(complete).toBeGreaterThan(restart);
      // every old pod terminated and was deleted before completion was declared
      for (const name of oldPods) {
        const term = evs.findIndex((e) => e.kind === 'pod-terminating' && e.subject === `${NS}/${name}`);
        const del = evs.findIndex((e) => e.kind === 'pod-deleted' && e.subject === `${NS}/${name}`);
        expect(term, name).toBeGreaterThan(restart);
        expect(del, name).toBeGreaterThan(term);
        expect(del, name).toBeLessThan(complete);
      }
      expect(evs.filter((e) => e.kind === 'pod-created').length).toBeGreaterThanOrEqual(2);
      expect(evs.some((e) => e.kind === 'endpoint-changed' && JSON.parse(e.attrs).change === 'removed')).toBe(true);
      const patched = cp.store.get('deployments', NS, 'web')!.spec.template.metadata.annotations['kubectl.kubernetes.io/restartedAt'];
      expect(JSON.parse(evs[restart]!.attrs).detail).toContain(patched);
      expect((db.prepare("select value from meta where key = 'node'").get() as { value: string }).value).toBe(NODE);
      const ended = Number((db.prepare("select value from meta where key = 'ended_ns'").get() as { value: string }).value);
      expect(ended - evs[complete]!.ts_ns).toBeGreaterThan(0.25e9);
      expect(ended - evs[complete]!.ts_ns).toBeLessThan(20e9);
      const k8sKinds = (db.prepare('select distinct kind from k8s_objects order by kind').all() as Array<{ kind: string }>).map((r) => r.kind);
      expect(k8sKinds).toEqual(expect.arrayContaining(['Deployment', 'EndpointSlice', 'Pod', 'ReplicaSet', 'Service']));
    } finally {
      db.close();
    }
  }, 55_000);
});

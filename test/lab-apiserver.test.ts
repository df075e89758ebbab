/**
 * The lab API server, driven with @kubernetes/client-node 1.4.0 over real HTTP (no root needed).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { Store } from '../lab/apiserver/store.js';
import { startApiServer, type ApiServer } from '../lab/apiserver/server.js';
import { matchFields, matchLabels, parseFieldSelector, parseLabelSelector } from '../lab/apiserver/selectors.js';
import { jsonPatch, mergePatch, strategicMergePatch } from '../lab/apiserver/patch.js';
import { writeKubeconfig } from '../lab/kubeconfig.js';
import { makeDeployment } from '../lab/controlplane.js';

let api: ApiServer;
let store: Store;
let dir: string;
let kc: k8s.KubeConfig;
let core: k8s.CoreV1Api;
let apps: k8s.AppsV1Api;

const pod = (name: string, labels: Record<string, string> = {}, extra: Record<string, unknown> = {}) => ({
  metadata: { name, labels }, spec: { containers: [{ name: 'c', image: 'img:1' }], ...extra },
});

interface WatchEv { type: string; object: any }
/** Open a raw watch with client-node's Watch; events are pushed into `events`. */
async function openWatch(path: string, params: Record<string, string | number | boolean | undefined>) {
  const events: WatchEv[] = [];
  let doneErr: unknown = 'open';
  const w = new k8s.Watch(kc);
  const ctl = await w.watch(path, params, (type, object) => events.push({ type, object }), (err) => { doneErr = err; });
  return { events, ctl, done: () => doneErr !== 'open', err: () => doneErr };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function expectApiError(p: Promise<unknown>, code: number, reason?: string): Promise<any> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(k8s.ApiException);
    const ex = e as k8s.ApiException<string>;
    expect(ex.code).toBe(code);
    const body = typeof ex.body === 'string' ? JSON.parse(ex.body) : ex.body;
    expect(body.kind).toBe('Status');
    expect(body.code).toBe(code);
    if (reason) expect(body.reason).toBe(reason);
    return body;
  }
  throw new Error(`expected HTTP ${code}`);
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lab-apiserver-'));
  store = new Store({ nodeName: 'lab-node-1', nodeIP: '10.0.0.1' });
  api = await startApiServer(store, { bookmarkIntervalMs: 100 });
  writeKubeconfig(join(dir, 'kubeconfig'), api.url, { namespace: 'default' });
  kc = new k8s.KubeConfig();
  kc.loadFromFile(join(dir, 'kubeconfig'));
  core = kc.makeApiClient(k8s.CoreV1Api);
  apps = kc.makeApiClient(k8s.AppsV1Api);
});

afterAll(async () => {
  await api?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('kubeconfig and discovery', () => {
  it('writes a kubeconfig client-node loads and uses', () => {
    expect(kc.getCurrentCluster()?.server).toBe(api.url);
    expect(kc.getCurrentCluster()?.skipTLSVerify).toBe(true);
    expect(kc.getContexts()[0]?.namespace).toBe('default');
    expect(kc.getCurrentUser()?.token).toBeTruthy();
  });

  it('serves /version, /api, /apis and resource lists', async () => {
    const v = await kc.makeApiClient(k8s.VersionApi).getCode();
    expect(v.major).toBe('1');
    const coreRes = await core.getAPIResources();
    const names = coreRes.resources.map((r) => r.name);
    expect(names).toEqual(expect.arrayContaining(['pods', 'pods/status', 'services', 'events', 'namespaces', 'nodes']));
    expect(coreRes.resources.find((r) => r.name === 'pods')!.verbs).toContain('watch');
    const groups = await kc.makeApiClient(k8s.ApisApi).getAPIVersions();
    expect(groups.groups.map((g) => g.name).sort()).toEqual(['apps', 'discovery.k8s.io', 'policy']);
    const appsRes = await apps.getAPIResources();
    expect(appsRes.resources.map((r) => r.name)).toEqual(expect.arrayContaining(['deployments', 'deployments/status', 'replicasets', 'replicasets/status']));
    const disc = await kc.makeApiClient(k8s.DiscoveryV1Api).getAPIResources();
    expect(disc.resources.map((r) => r.name)).toContain('endpointslices');
    const apiVersions = await (await fetch(`${api.url}/api`)).json();
    expect(apiVersions.versions).toEqual(['v1']);
  });

  it('answers kubectl-style Table requests with columns and rows', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('table-a', { app: 'table' }, { nodeName: 'lab-node-1' }) });
    const res = await fetch(`${api.url}/api/v1/namespaces/default/pods?labelSelector=app%3Dtable`, { headers: { accept: 'application/json;as=Table;v=v1;g=meta.k8s.io,application/json' } });
    const t = await res.json();
    expect(t.kind).toBe('Table');
    expect(t.columnDefinitions.map((c: { name: string }) => c.name)).toEqual(['Name', 'Ready', 'Status', 'Restarts', 'Age', 'IP', 'Node']);
    expect(t.rows).toHaveLength(1);
    expect(t.rows[0].cells.slice(0, 4)).toEqual(['table-a', '0/1', 'Pending', '0']);
    expect(t.rows[0].cells[6]).toBe('lab-node-1');
    expect(t.rows[0].object.metadata.name).toBe('table-a');
  });

  it('has the default namespace and the lab node', async () => {
    const ns = await core.readNamespace({ name: 'default' });
    expect(ns.status?.phase).toBe('Active');
    const node = await core.readNode({ name: 'lab-node-1' });
    expect(node.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address).toBe('10.0.0.1');
  });
});

describe('CRUD', () => {
  it('creates with uid, resourceVersion, creationTimestamp, generateName; lists with a resourceVersion', async () => {
    const a = await core.createNamespacedPod({ namespace: 'default', body: pod('crud-a', { app: 'crud' }) });
    expect(a.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number(a.metadata?.resourceVersion)).toBeGreaterThan(0);
    expect(a.metadata?.creationTimestamp).toBeInstanceOf(Date);
    expect(a.status?.phase).toBe('Pending');
    expect(a.spec?.terminationGracePeriodSeconds).toBe(30);
    const b = await core.createNamespacedPod({ namespace: 'default', body: { metadata: { generateName: 'crud-gen-', labels: { app: 'crud' } }, spec: { containers: [{ name: 'c', image: 'i' }] } } });
    expect(b.metadata?.name).toMatch(/^crud-gen-[bcdfghjklmnpqrstvwxz2456789]{5}$/);
    expect(Number(b.metadata?.resourceVersion)).toBeGreaterThan(Number(a.metadata?.resourceVersion));
    const list = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=crud' });
    expect(list.kind).toBe('PodList');
    expect(list.items.map((p) => p.metadata?.name).sort()).toEqual(['crud-a', b.metadata!.name!].sort());
    expect(Number(list.metadata?.resourceVersion)).toBeGreaterThanOrEqual(Number(b.metadata?.resourceVersion));
    const all = await core.listPodForAllNamespaces();
    expect(all.items.length).toBeGreaterThanOrEqual(2);
    const got = await core.readNamespacedPod({ namespace: 'default', name: 'crud-a' });
    expect(got.metadata?.uid).toBe(a.metadata?.uid);
  });

  it('returns real Status errors: 404, 409 AlreadyExists, 409 Conflict, 422, 400, 415', async () => {
    const nf = await expectApiError(core.readNamespacedPod({ namespace: 'default', name: 'nope' }), 404, 'NotFound');
    expect(nf.message).toBe('pods "nope" not found');
    await expectApiError(core.createNamespacedPod({ namespace: 'default', body: pod('crud-a') }), 409, 'AlreadyExists');
    await expectApiError(core.createNamespacedPod({ namespace: 'default', body: pod('Bad_Name') }), 422, 'Invalid');
    await expectApiError(core.createNamespacedPod({ namespace: 'no-such-ns', body: pod('x') }), 404, 'NotFound');
    const cur = await core.readNamespacedPod({ namespace: 'default', name: 'crud-a' });
    const stale = structuredClone(cur);
    cur.metadata!.labels = { app: 'crud', v: '2' };
    const updated = await core.replaceNamespacedPod({ namespace: 'default', name: 'crud-a', body: cur });
    expect(updated.metadata?.labels?.v).toBe('2');
    stale.metadata!.labels = { app: 'crud', v: 'stale' };
    const conflict = await expectApiError(core.replaceNamespacedPod({ namespace: 'default', name: 'crud-a', body: stale }), 409, 'Conflict');
    expect(conflict.message).toContain('the object has been modified');
    const bad = await fetch(`${api.url}/api/v1/namespaces/default/pods`, { method: 'POST', body: '{nope', headers: { 'content-type': 'application/json' } });
    expect(bad.status).toBe(400);
    expect((await bad.json()).reason).toBe('BadRequest');
    const wrongPatch = await fetch(`${api.url}/api/v1/namespaces/default/pods/crud-a`, { method: 'PATCH', body: '{}', headers: { 'content-type': 'text/plain' } });
    expect(wrongPatch.status).toBe(415);
    const unknown = await fetch(`${api.url}/apis/apps/v1/namespaces/default/widgets`);
    expect(unknown.status).toBe(404);
  });

  it('keeps status on a main-resource update and only status on a /status update', async () => {
    const p = await core.createNamespacedPod({ namespace: 'default', body: pod('status-a') });
    const s = await core.replaceNamespacedPodStatus({ namespace: 'default', name: 'status-a', body: { ...p, status: { phase: 'Running', podIP: '10.244.0.9' }, metadata: { ...p.metadata, labels: { ignored: 'yes' } } } });
    expect(s.status?.phase).toBe('Running');
    expect(s.metadata?.labels?.ignored).toBeUndefined();
    const m = await core.replaceNamespacedPod({ namespace: 'default', name: 'status-a', body: { ...s, status: { phase: 'Failed' } } });
    expect(m.status?.phase).toBe('Running');
  });
});

describe('patches', () => {
  it('applies the strategic-merge patch of `kubectl rollout restart` and bumps generation', async () => {
    const d = makeDeployment({ name: 'patch-web', replicas: 2, labels: { app: 'patch-web' }, port: 8080 });
    const created = await apps.createNamespacedDeployment({ namespace: 'default', body: d });
    expect(created.metadata?.generation).toBe(1);
    expect(created.spec?.strategy?.rollingUpdate?.maxSurge).toBe('25%');
    const at = '2025-01-02T03:04:05Z';
    const patched = await apps.patchNamespacedDeployment(
      { namespace: 'default', name: 'patch-web', body: { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': at } } } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch),
    );
    expect(patched.spec?.template?.metadata?.annotations?.['kubectl.kubernetes.io/restartedAt']).toBe(at);
    expect(patched.metadata?.generation).toBe(2);
    expect(patched.spec?.template?.spec?.containers[0]?.ports?.[0]?.containerPort).toBe(8080);
    // containers merge by name: an image change keeps the ports
    const img = await apps.patchNamespacedDeployment(
      { namespace: 'default', name: 'patch-web', body: { spec: { template: { spec: { containers: [{ name: 'app', image: 'other:2' }] } } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch),
    );
    expect(img.spec?.template?.spec?.containers).toHaveLength(1);
    expect(img.spec?.template?.spec?.containers[0]?.image).toBe('other:2');
    expect(img.spec?.template?.spec?.containers[0]?.ports?.[0]?.containerPort).toBe(8080);
    expect(img.metadata?.generation).toBe(3);
    // a status-only change does not bump generation
    const st = await apps.patchNamespacedDeploymentStatus(
      { namespace: 'default', name: 'patch-web', body: { status: { replicas: 7 } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    expect(st.status?.replicas).toBe(7);
    expect(st.metadata?.generation).toBe(3);
  });

  it('applies merge-patch and json-patch; a failing json-patch test is 422', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('patch-p', { a: '1', b: '2' }) });
    const m = await core.patchNamespacedPod({ namespace: 'default', name: 'patch-p', body: { metadata: { labels: { a: null, c: '3' } } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    expect(m.metadata?.labels).toEqual({ b: '2', c: '3' });
    const j = await core.patchNamespacedPod({ namespace: 'default', name: 'patch-p', body: [{ op: 'test', path: '/metadata/labels/b', value: '2' }, { op: 'replace', path: '/metadata/labels/b', value: 'x' }, { op: 'add', path: '/metadata/annotations', value: { 'k~/': 'v' } }] });
    expect(j.metadata?.labels?.b).toBe('x');
    expect(j.metadata?.annotations?.['k~/']).toBe('v');
    await expectApiError(core.patchNamespacedPod({ namespace: 'default', name: 'patch-p', body: [{ op: 'test', path: '/metadata/labels/b', value: 'nope' }] }), 422, 'Invalid');
  });

  it('pure patch functions follow RFC 7386, RFC 6902 and strategic-merge directives', () => {
    expect(mergePatch({ a: { b: 1, c: 2 }, l: [1, 2] }, { a: { b: null }, l: [3] })).toEqual({ a: { c: 2 }, l: [3] });
    expect(jsonPatch({ a: [1, 2] }, [{ op: 'add', path: '/a/-', value: 3 }, { op: 'move', from: '/a/0', path: '/b' }, { op: 'copy', from: '/b', path: '/c' }, { op: 'remove', path: '/a/0' }])).toEqual({ a: [3], b: 1, c: 1 });
    expect(() => jsonPatch({}, [{ op: 'remove', path: '/x' }])).toThrow(/not found/);
    const base = { spec: { containers: [{ name: 'a', image: '1' }, { name: 'b', image: '1' }], tolerations: [{ key: 'x' }] }, metadata: { finalizers: ['f1'] } };
    expect(strategicMergePatch(base, { spec: { containers: [{ name: 'b', $patch: 'delete' }, { name: 'c', image: '3' }], tolerations: [{ key: 'y' }] }, metadata: { finalizers: ['f2'] } }))
      .toEqual({ spec: { containers: [{ name: 'a', image: '1' }, { name: 'c', image: '3' }], tolerations: [{ key: 'y' }] }, metadata: { finalizers: ['f1', 'f2'] } });
    expect(strategicMergePatch({ m: { a: 1, b: 2 } }, { m: { $patch: 'replace', c: 3 } })).toEqual({ m: { c: 3 } });
  });
});

describe('selectors', () => {
  it('parses and matches label selectors', () => {
    const l = { app: 'web', tier: 'fe', env: 'prod' };
    const m = (s: string) => matchLabels(parseLabelSelector(s), l);
    expect(m('app=web')).toBe(true);
    expect(m('app==web,tier=fe')).toBe(true);
    expect(m('app!=web')).toBe(false);
    expect(m('app in (api, web)')).toBe(true);
    expect(m('app notin (web)')).toBe(false);
    expect(m('env,!canary')).toBe(true);
    expect(m('!env')).toBe(false);
    expect(m('missing!=x')).toBe(true);
    expect(m('app in (web),tier notin (db, cache),env')).toBe(true);
    expect(() => parseLabelSelector('app in (web')).toThrow();
    expect(() => parseLabelSelector('a b c')).toThrow();
  });

  it('parses and matches field selectors', () => {
    const o = { metadata: { name: 'p', namespace: 'ns' }, spec: { nodeName: 'n1' }, status: { phase: 'Running' } };
    expect(matchFields(parseFieldSelector('spec.nodeName=n1,status.phase!=Failed'), o)).toBe(true);
    expect(matchFields(parseFieldSelector('metadata.name==q'), o)).toBe(false);
    expect(matchFields(parseFieldSelector('metadata.namespace=ns'), o)).toBe(true);
    expect(() => parseFieldSelector('spec.bogus=1')).toThrow(/not supported/);
  });

  it('filters LISTs over HTTP by label and field selectors; bad selectors are 400', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('sel-a', { app: 'sel', tier: 'fe' }, { nodeName: 'lab-node-1' }) });
    await core.createNamespacedPod({ namespace: 'default', body: pod('sel-b', { app: 'sel', tier: 'db' }) });
    await core.createNamespacedPod({ namespace: 'default', body: pod('sel-c', { app: 'sel', canary: 'y' }) });
    const names = async (labelSelector?: string, fieldSelector?: string) =>
      (await core.listNamespacedPod({ namespace: 'default', labelSelector, fieldSelector })).items.map((p) => p.metadata?.name).sort();
    expect(await names('app=sel,tier in (fe,db)')).toEqual(['sel-a', 'sel-b']);
    expect(await names('app=sel,tier notin (fe)')).toEqual(['sel-b', 'sel-c']);
    expect(await names('app=sel,!canary')).toEqual(['sel-a', 'sel-b']);
    expect(await names('app=sel', 'spec.nodeName=lab-node-1')).toEqual(['sel-a']);
    expect(await names('app=sel', 'metadata.name!=sel-a,status.phase=Pending')).toEqual(['sel-b', 'sel-c']);
    await expectApiError(core.listNamespacedPod({ namespace: 'default', labelSelector: 'app in (x' }), 400, 'BadRequest');
  });
});

describe('watch', () => {
  it('streams ADDED, MODIFIED, DELETED in order from a LIST resourceVersion', async () => {
    const list = await core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=w1' });
    const w = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: list.metadata?.resourceVersion, labelSelector: 'app=w1' });
    await core.createNamespacedPod({ namespace: 'default', body: pod('w1-a', { app: 'w1' }) });
    await core.patchNamespacedPod({ namespace: 'default', name: 'w1-a', body: { metadata: { annotations: { x: 'y' } } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    await core.createNamespacedPod({ namespace: 'default', body: pod('w1-other', { app: 'other' }) });
    await core.deleteNamespacedPod({ namespace: 'default', name: 'w1-a' }); // unscheduled: immediate
    await until(() => w.events.length >= 3, 'three events');
    w.ctl.abort();
    expect(w.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED w1-a', 'MODIFIED w1-a', 'DELETED w1-a']);
    const rvs = w.events.map((e) => Number(e.object.metadata.resourceVersion));
    expect(rvs).toEqual([...rvs].sort((a, b) => a - b));
    expect(w.events[0]!.object.kind).toBe('Pod');
  });

  it('replays changes after an older resourceVersion, sends current objects for rv 0, and turns label changes into ADDED/DELETED', async () => {
    const a = await core.createNamespacedPod({ namespace: 'default', body: pod('w2-a', { app: 'w2' }) });
    await core.createNamespacedPod({ namespace: 'default', body: pod('w2-b', { app: 'w2' }) });
    const replay = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: a.metadata?.resourceVersion, labelSelector: 'app=w2' });
    const zero = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: '0', labelSelector: 'app=w2' });
    await until(() => replay.events.length >= 1 && zero.events.length >= 2, 'replay and initial events');
    expect(replay.events.map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['ADDED w2-b']);
    expect(zero.events.map((e) => `${e.type} ${e.object.metadata.name}`).sort()).toEqual(['ADDED w2-a', 'ADDED w2-b']);
    await core.patchNamespacedPod({ namespace: 'default', name: 'w2-a', body: { metadata: { labels: { app: 'gone' } } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    await core.patchNamespacedPod({ namespace: 'default', name: 'w2-a', body: { metadata: { labels: { app: 'w2' } } } }, k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch));
    await until(() => zero.events.length >= 4, 'selector transitions');
    expect(zero.events.slice(2).map((e) => `${e.type} ${e.object.metadata.name}`)).toEqual(['DELETED w2-a', 'ADDED w2-a']);
    replay.ctl.abort();
    zero.ctl.abort();
  });

  it('sends a 410 Expired ERROR event for a resourceVersion older than the history window', async () => {
    const before = store.resourceVersion();
    await core.createNamespacedPod({ namespace: 'default', body: pod('w3-a', { app: 'w3' }) });
    api.faults.expireWatches(0); // compact the history only
    const w = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: before });
    await until(() => w.events.length >= 1 && w.done(), 'ERROR event and end of stream');
    expect(w.events[0]!.type).toBe('ERROR');
    expect(w.events[0]!.object).toMatchObject({ kind: 'Status', status: 'Failure', reason: 'Expired', code: 410 });
    expect(w.events[0]!.object.message).toMatch(new RegExp(`^too old resource version: ${before} \\(\\d+\\)$`));
    // a watch from the current resourceVersion still works
    const ok = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: store.resourceVersion(), labelSelector: 'app=w3' });
    await core.deleteNamespacedPod({ namespace: 'default', name: 'w3-a' });
    await until(() => ok.events.length >= 1, 'DELETED after expiry');
    expect(ok.events[0]!.type).toBe('DELETED');
    ok.ctl.abort();
    // forced expiry: the next watch gets 410 whatever its resourceVersion
    api.faults.expireWatches(1);
    const forced = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: store.resourceVersion() });
    await until(() => forced.events.length >= 1, 'forced ERROR');
    expect(forced.events[0]!.object.code).toBe(410);
  });

  it('a small history window expires old resourceVersions by itself', async () => {
    const s = new Store({ nodeName: 'n', historyLimit: 3 });
    const rv0 = Number(s.resourceVersion());
    for (let i = 0; i < 5; i++) s.create('pods', pod(`h-${i}`));
    expect(s.changesSince(rv0)).toBe('expired');
    const recent = s.changesSince(Number(s.resourceVersion()) - 2);
    expect(recent).not.toBe('expired');
    expect((recent as { object: any }[]).map((c) => c.object.metadata.name)).toEqual(['h-3', 'h-4']);
  });

  it('sends BOOKMARKs when allowed, ends at timeoutSeconds, and cutWatches ends streams abruptly', async () => {
    const b = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: store.resourceVersion(), allowWatchBookmarks: true, labelSelector: 'app=none' });
    await until(() => b.events.some((e) => e.type === 'BOOKMARK'), 'a bookmark');
    const bm = b.events.find((e) => e.type === 'BOOKMARK')!;
    expect(bm.object.kind).toBe('Pod');
    expect(Number(bm.object.metadata.resourceVersion)).toBeGreaterThan(0);
    const t = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: store.resourceVersion(), timeoutSeconds: 1 });
    await until(() => t.done(), 'timeoutSeconds end', 5000);
    expect(api.faults.openWatches()).toBeGreaterThanOrEqual(1);
    const n = api.faults.cutWatches();
    expect(n).toBeGreaterThanOrEqual(1);
    await until(() => b.done(), 'cut watch reported done');
    expect(api.faults.openWatches()).toBe(0);
  });

  it('watches a single object by name and cluster-wide with the /watch/ path', async () => {
    const w = await openWatch('/api/v1/namespaces/default/pods', { fieldSelector: 'metadata.name=w5-a', resourceVersion: store.resourceVersion() });
    const res = await fetch(`${api.url}/api/v1/watch/pods?resourceVersion=${store.resourceVersion()}&labelSelector=app%3Dw5`);
    const reader = res.body!.getReader();
    await core.createNamespacedPod({ namespace: 'default', body: pod('w5-b', { app: 'w5' }) });
    await core.createNamespacedPod({ namespace: 'default', body: pod('w5-a', { app: 'w5' }) });
    let text = '';
    while (text.split('\n').filter(Boolean).length < 2) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(text.split('\n').filter(Boolean).map((l) => JSON.parse(l).object.metadata.name)).toEqual(['w5-b', 'w5-a']);
    await until(() => w.events.length >= 1, 'named watch');
    expect(w.events.map((e) => e.object.metadata.name)).toEqual(['w5-a']);
    w.ctl.abort();
  });
});

describe('client-node informer', () => {
  it('recovers from a clean server-side close and from a 410 Expired by rewatching and relisting', async () => {
    const inf = k8s.makeInformer(kc, '/api/v1/namespaces/default/pods', () => core.listNamespacedPod({ namespace: 'default', labelSelector: 'app=inf' }), 'app=inf');
    const seen: string[] = [];
    inf.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    inf.on('error', (e) => seen.push(`error ${(e as Error)?.message}`));
    await inf.start();
    try {
      const mk = (n: string) => core.createNamespacedPod({ namespace: 'default', body: pod(n, { app: 'inf' }) });
      await mk('inf-a');
      await until(() => seen.includes('add inf-a'), 'inf-a');
      expect(api.faults.closeWatches()).toBeGreaterThanOrEqual(1);
      await until(() => api.faults.openWatches() >= 1, 'informer rewatch');
      await mk('inf-b');
      await until(() => seen.includes('add inf-b'), 'inf-b after a clean close');
      api.faults.expireWatches(1);
      api.faults.closeWatches();
      await mk('inf-c');
      await until(() => seen.includes('add inf-c'), 'inf-c after a 410 and relist');
      expect(seen.filter((x) => x.startsWith('error'))).toEqual([]);
    } finally {
      await inf.stop();
    }
  });
});

describe('deletion', () => {
  it('deletes a scheduled pod gracefully: deletionTimestamp, then gone after gracePeriodSeconds=0', async () => {
    await core.createNamespacedPod({ namespace: 'default', body: pod('del-a', { app: 'del' }, { nodeName: 'lab-node-1', terminationGracePeriodSeconds: 20 }) });
    const w = await openWatch('/api/v1/namespaces/default/pods', { resourceVersion: store.resourceVersion(), labelSelector: 'app=del' });
    const t0 = Date.now();
    const d1 = await core.deleteNamespacedPod({ namespace: 'default', name: 'del-a' });
    expect(d1.metadata?.deletionGracePeriodSeconds).toBe(20);
    const dts = d1.metadata!.deletionTimestamp!.getTime();
    expect(dts).toBeGreaterThanOrEqual(Math.floor(t0 / 1000) * 1000 + 19_000);
    expect(dts).toBeLessThanOrEqual(Date.now() + 21_000);
    const still = await core.readNamespacedPod({ namespace: 'default', name: 'del-a' });
    expect(still.metadata?.deletionTimestamp).toBeInstanceOf(Date);
    // a shorter grace in the body shortens it
    const d2 = await core.deleteNamespacedPod({ namespace: 'default', name: 'del-a', body: { gracePeriodSeconds: 5 } });
    expect(d2.metadata?.deletionGracePeriodSeconds).toBe(5);
    await core.deleteNamespacedPod({ namespace: 'default', name: 'del-a', gracePeriodSeconds: 0 });
    await expectApiError(core.readNamespacedPod({ namespace: 'default', name: 'del-a' }), 404, 'NotFound');
    await until(() => w.events.length >= 3, 'MODIFIED, MODIFIED, DELETED');
    expect(w.events.map((e) => e.type)).toEqual(['MODIFIED', 'MODIFIED', 'DELETED']);
    expect(w.events[2]!.object.metadata.deletionTimestamp).toBeTruthy();
    w.ctl.abort();
  });

  it('deletes services immediately and frees nothing it should keep', async () => {
    const svc = await core.createNamespacedService({ namespace: 'default', body: { metadata: { name: 'del-svc' }, spec: { selector: { a: 'b' }, ports: [{ port: 80 }] } } });
    expect(svc.spec?.clusterIP).toMatch(/^10\.96\./);
    expect(svc.spec?.ports?.[0]?.targetPort).toBe(80);
    await core.deleteNamespacedService({ namespace: 'default', name: 'del-svc' });
    await expectApiError(core.readNamespacedService({ namespace: 'default', name: 'del-svc' }), 404);
  });
});

describe('faults', () => {
  it('stall(ms) holds responses back until the delay passes', async () => {
    api.faults.stall(400);
    let resolved = false;
    const p = core.readNamespace({ name: 'default' }).then((x) => { resolved = true; return x; });
    await new Promise((r) => setTimeout(r, 100));
    expect(resolved).toBe(false);
    api.faults.stall(0);
    expect((await p).metadata?.name).toBe('default');
  });
});

/**
 * `kubectl rolltrace record deploy/NAME`: from anywhere with a kubeconfig, a recorder pod on every node
 * that hosts the Deployment's pods (or --nodes), the rollout (restarted with --restart), the bundles
 * copied back, merged, analyzed. Talks to the API with @kubernetes/client-node (auth of every kubeconfig
 * kind, including exec plugins; API errors as Status bodies the plugin turns into one line; exec over
 * WebSocket for the stop and the copy), so it needs no kubectl binary and no particular kubectl version.
 *
 * Every pod it creates is deleted on every path out: success, failure, Ctrl-C (the first one while
 * recording stops early and still collects; the next one aborts), SIGTERM.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { PassThrough, type Writable } from 'node:stream';
import { Exec } from '@kubernetes/client-node';
import { InputError } from '../../schemas/errors.js';
import { packageRoot, rolltraceVersion } from '../../schemas/version.js';
import { ApiError, KubeClient, loadKubeConfig } from '../../recorder/sources/kube/client.js';
import type { KubeObject } from '../../recorder/sources/kube/derive.js';
import { labelSelectorToString } from '../../recorder/sources/kube/selector.js';
import { restartPatch, rfc3339Local, rolloutStatus } from '../../recorder/sources/rollout/index.js';
import { mergeBundles } from '../../analyzer/merge/merge.js';
import { runAnalyze } from '../../analyzer/commands/analyze.js';
import type { PluginOptions } from './args.js';
import { accessDeniedLine, apiErrorLine, LOAD_IMAGE_HINT, podStartProblem, type AccessCheck } from './errors.js';
import { BUNDLE_DIR, collectorPod, CONTAINER, NODE_BUNDLES, pickBundle, PID_FILE, READY_RE, RECORDING_RE, recorderPod, serviceProbeUrl, SESSION_LABEL } from './pod.js';

const say = (s: string) => process.stderr.write(`rolltrace: ${s}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
const enc = encodeURIComponent;

/** Thrown when the user aborted (second Ctrl-C, SIGTERM): cleanup, exit 130. */
class Aborted extends Error {}

export interface PluginHooks { onPodsCreated?(names: string[]): void }

interface Recorder { node: string; pod: string; bundle: string; local: string; size: number; recording: boolean; exit: number | null }

type Api = <T = KubeObject>(action: string, method: string, path: string, body?: unknown, contentType?: string, errNs?: string) => Promise<T>;

/** The kubeconfig (--kubeconfig, $KUBECONFIG, ~/.kube/config, --context), a client, and API calls whose errors are one line. */
function connect(o: PluginOptions) {
  const kc = loadKubeConfig(o.kubeconfig ?? undefined);
  if (o.context) {
    if (!kc.getContexts().some((c) => c.name === o.context)) throw new InputError(`--context ${o.context}: no such context in the kubeconfig`);
    kc.setCurrentContext(o.context);
  }
  const client = new KubeClient(kc);
  const api: Api = async <T = KubeObject>(action: string, method: string, path: string, body?: unknown, contentType?: string, errNs?: string): Promise<T> => {
    try {
      return await client.request<T>(method, path, body, contentType);
    } catch (e) {
      if (e instanceof ApiError) throw new InputError(apiErrorLine(e.status, e.body, action, { namespace: errNs }));
      throw new InputError(`cannot ${action}: ${(e as Error).message} (API server ${client.server})`);
    }
  };
  const image = o.image ?? `rolltrace:${rolltraceVersion()}`;
  // the default image is only ever imported (npm run image), never in a registry: never pulled
  const pullPolicy: 'Never' | 'IfNotPresent' = o.image ? 'IfNotPresent' : 'Never';
  return { kc, client, api, image, pullPolicy, session: randomBytes(3).toString('hex') };
}

const defaultOut = (what: string) => `rolltrace-${what}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}.rtb`;

function checkOut(out: string): void {
  if (existsSync(out)) throw new InputError(`${out} already exists; choose another --out or remove it`);
  if (!existsSync(dirname(out) || '.')) throw new InputError(`--out ${out}: directory ${dirname(out)} does not exist`);
}

export async function runPluginRecord(o: PluginOptions, hooks: PluginHooks = {}): Promise<number> {
  const { kc, client, api, image, pullPolicy, session } = connect(o);
  const ns = o.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  const rns = o.recorderNamespace;

  const out = o.out ?? defaultOut(o.deployment);
  checkOut(out);

  // 1. may we (like `kubectl auth can-i`, every check at once), and what to record
  const checks: AccessCheck[] = [
    { verb: 'get', resource: 'deployments', group: 'apps', namespace: ns },
    { verb: 'list', resource: 'pods', group: '', namespace: ns },
    ...(o.restart ? [{ verb: 'patch', resource: 'deployments', group: 'apps', namespace: ns }] : []),
    ...(o.probe === 'auto' ? [{ verb: 'list', resource: 'services', group: '', namespace: ns }] : []),
    ...['create', 'get', 'delete'].map((verb) => ({ verb, resource: 'pods', group: '', namespace: rns })),
    { verb: 'get', resource: 'pods', subresource: 'log', group: '', namespace: rns },
    { verb: 'create', resource: 'pods', subresource: 'exec', group: '', namespace: rns },
  ];
  await reviewAccess(client, checks);
  const denied = accessDeniedLine(checks);
  if (denied) throw new InputError(denied);
  await checkRecorderAccount(client, rns, o.serviceAccount);
  const dep = await api('read the Deployment', 'GET', `/apis/apps/v1/namespaces/${enc(ns)}/deployments/${enc(o.deployment)}`, undefined, undefined, ns);

  const spec = (dep.spec ?? {}) as { selector?: Parameters<typeof labelSelectorToString>[0]; template?: { metadata?: { labels?: Record<string, string> } } };
  const selector = labelSelectorToString(spec.selector);
  let nodes = o.nodes;
  for (const n of nodes) {
    // a pod bound to a node that does not exist stays Pending forever: say so now (when we may read nodes)
    try { await client.request('GET', `/api/v1/nodes/${enc(n)}`); } catch (e) {
      if (e instanceof ApiError && e.status === 404) throw new InputError(`--nodes: node ${n} does not exist (kubectl get nodes)`);
    }
  }
  if (!nodes.length) {
    const pods = await api<{ items: KubeObject[] }>('list the Deployment\'s pods', 'GET', `/api/v1/namespaces/${enc(ns)}/pods?${new URLSearchParams({ labelSelector: selector })}`, undefined, undefined, ns);
    nodes = [...new Set(pods.items.map((p) => (p.spec as { nodeName?: string } | undefined)?.nodeName).filter((n): n is string => !!n))].sort();
    if (!nodes.length) throw new InputError(`deploy/${o.deployment} in namespace ${ns} has no pod on any node: nothing to record (--nodes N,.. names the nodes)`);
  }
  let probeUrl: string | null = null;
  if (o.probe === 'auto') {
    const svcs = await api<{ items: KubeObject[] }>('list Services', 'GET', `/api/v1/namespaces/${enc(ns)}/services`, undefined, undefined, ns);
    const found = serviceProbeUrl(svcs.items as Parameters<typeof serviceProbeUrl>[0], spec.template?.metadata?.labels ?? {});
    if (found) { probeUrl = found.url; say(`probe: ${found.url} (Service ${found.service}) at ${o.rate}/s from every recording node`); }
    else say(`probe: off (no Service in ${ns} selects deploy/${o.deployment}'s pods; --probe URL sets one)`);
  } else if (o.probe !== 'off') probeUrl = o.probe;

  const stem = out.replace(/\.rtb$/, '');
  const recs: Recorder[] = nodes.map((node, i) => ({
    node, pod: `rolltrace-${session}-${i}`, bundle: `${BUNDLE_DIR}/${session}-${node}.rtb`,
    local: nodes.length === 1 ? out : `${stem}.${node}.rtb`, size: 0, recording: false, exit: null,
  }));
  for (const r of recs) if (r.local !== out && existsSync(r.local)) throw new InputError(`${r.local} already exists; choose another --out`);

  // 2. signals: the first Ctrl-C while recording stops early (still collected); otherwise, or the second, aborts
  let phase: 'setup' | 'recording' | 'collect' = 'setup';
  let stopEarly: () => void = () => undefined;
  const stopEarlyP = new Promise<'stop'>((r) => { stopEarly = () => r('stop'); });
  let abort: (why: string) => void = () => undefined;
  const abortP = new Promise<never>((_, rej) => { abort = (why) => rej(new Aborted(why)); });
  abortP.catch(() => undefined);
  let interrupts = 0;
  const onInt = () => {
    interrupts++;
    if (phase === 'recording' && interrupts === 1) {
      say('Ctrl-C: stopping the recorders and collecting what they recorded (Ctrl-C again aborts)');
      stopEarly();
    } else abort('interrupted');
  };
  const onTerm = () => abort('terminated');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const guard = <T>(p: Promise<T>) => Promise.race([p, abortP]);

  const created: string[] = [];
  let recordingStarted = false;
  try {
    // 3. a recorder pod per node
    for (const r of recs) {
      const body = recorderPod({ name: r.pod, namespace: rns, session, node: r.node, image, pullPolicy, serviceAccount: o.serviceAccount,
        watchNamespace: ns, deployment: o.deployment, probeUrl, rate: o.rate, bundle: r.bundle });
      await guard(api('create the recorder pod', 'POST', `/api/v1/namespaces/${enc(rns)}/pods`, body, undefined, rns));
      created.push(r.pod);
      say(`node ${r.node}: recorder pod ${rns}/${r.pod} created (image ${image})`);
    }
    hooks.onPodsCreated?.(created);
    // 4. until each one says it records
    const t0 = Date.now();
    while (recs.some((r) => !r.recording)) {
      for (const r of recs.filter((x) => !x.recording)) {
        const pod = await guard(api('read the recorder pod', 'GET', `/api/v1/namespaces/${enc(rns)}/pods/${enc(r.pod)}`, undefined, undefined, rns));
        const problem = podStartProblem(pod as Parameters<typeof podStartProblem>[0], o.image ? 'pull it into the node or check --image' : LOAD_IMAGE_HINT);
        if (problem) throw new InputError(problem);
        const phaseNow = (pod.status as { phase?: string } | undefined)?.phase;
        if (phaseNow === 'Running' || phaseNow === 'Succeeded' || phaseNow === 'Failed') {
          const log = await guard(podLog(client, rns, r.pod));
          if (RECORDING_RE.test(log)) { r.recording = true; recordingStarted = true; say(`node ${r.node}: recording (pod ${r.pod})`); continue; }
          if (phaseNow !== 'Running' || READY_RE.test(log)) {
            throw new InputError(`the recorder on node ${r.node} stopped before recording: ${lastLines(log, 2)}`);
          }
        }
      }
      if (recs.every((r) => r.recording)) break;
      if (Date.now() - t0 > 120_000) {
        const late = recs.filter((r) => !r.recording).map((r) => r.node).join(', ');
        throw new InputError(`the recorder on node(s) ${late} did not start recording within 120 s (kubectl -n ${rns} describe pod -l ${SESSION_LABEL}=${session})`);
      }
      await guard(sleep(500));
    }

    // 5. the rollout
    phase = 'recording';
    const dpath = `/apis/apps/v1/namespaces/${enc(ns)}/deployments/${enc(o.deployment)}`;
    if (o.restart) {
      // a pre-roll, as `rolltrace record --restart` does: connections opened before the capture began
      // show no SYN and no request, so one cut at a SIGKILL could not be told from an idle one
      if (o.preRoll > 0) { say(`recording ${o.preRoll} s before the restart (--pre-roll)`); await guard(sleep(o.preRoll * 1000)); }
      await guard(api('restart the Deployment', 'PATCH', dpath, restartPatch(rfc3339Local()), 'application/strategic-merge-patch+json', ns));
      say(`deploy/${o.deployment} restarted`);
    } else say(`waiting for a rollout of deploy/${o.deployment} in ${ns} (Ctrl-C stops recording)`);
    const cancel = { cancelled: false };
    const result = await guard(Promise.race([stopEarlyP, waitRollout(o, ns, dpath, selector, api, !o.restart, cancel)])).finally(() => { cancel.cancelled = true; });
    if (result === 'done' && o.settle > 0) {
      say(`rollout complete; recording ${o.settle} s more (settle)`);
      await guard(Promise.race([stopEarlyP, sleep(o.settle * 1000)]));
    }

    // 6. stop (a recorder that already ended says why in its "bundle ready" line), collect
    phase = 'collect';
    await guard(Promise.all(recs.map((r) => execIn(kc, rns, r.pod, ['sh', '-c', `kill -INT $(cat ${PID_FILE}) 2>/dev/null; true`], null))));
    const t1 = Date.now();
    for (const r of recs) {
      for (;;) {
        const log = await guard(podLog(client, rns, r.pod));
        const m = READY_RE.exec(log);
        if (m) { r.size = Number(m[2]); r.exit = Number(m[3]); break; }
        if (Date.now() - t1 > 60_000) throw new InputError(`the recorder on node ${r.node} did not close its bundle within 60 s: ${lastLines(log, 2)}`);
        await guard(sleep(300));
      }
      if (r.exit !== 0 || r.size === 0) throw new InputError(`the recorder on node ${r.node} failed (exit ${r.exit}): ${lastLines(await podLog(client, rns, r.pod), 3)}`);
    }
    for (const r of recs) {
      await guard(copyBundle(kc, rns, r));
      await guard(execIn(kc, rns, r.pod, ['rm', '-f', r.bundle], null));
    }
  } catch (e) {
    await removePods(client, rns, created, recordingStarted ? recs : []);
    detach();
    if (e instanceof Aborted) { say(`${e.message}: recorder pods removed`); return 130; }
    throw e;
  }
  await removePods(client, rns, created, []);
  detach();

  // 7. one bundle, the analysis
  return await mergeAndAnalyze(recs, out);

  function detach() {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
}

async function mergeAndAnalyze(recs: Recorder[], out: string): Promise<number> {
  if (recs.length > 1) {
    const m = await mergeBundles(recs.map((r) => r.local), out);
    say(`merged ${recs.length} bundles -> ${out} (reference node ${m.nodes[0]})`);
    for (const r of recs) rmSync(r.local, { force: true });
  } else say(`bundle: ${out}`);
  return await runAnalyze(out, { format: 'text' });
}

/**
 * `kubectl rolltrace collect`: the newest closed bundle of every node (or --nodes) in /var/lib/rolltrace,
 * where the DaemonSet and the Job leave them, through a short-lived pod per node (exec cat); merged and
 * analyzed. Its pods are removed on every path out.
 */
export async function runPluginCollect(o: PluginOptions): Promise<number> {
  const { kc, client, api, image, pullPolicy, session } = connect(o);
  const rns = o.recorderNamespace;
  const out = o.out ?? defaultOut('collect');
  checkOut(out);
  const checks: AccessCheck[] = [
    ...(o.nodes.length ? [] : [{ verb: 'list', resource: 'nodes', group: '' }]),
    ...['create', 'get', 'delete'].map((verb) => ({ verb, resource: 'pods', group: '', namespace: rns })),
    { verb: 'create', resource: 'pods', subresource: 'exec', group: '', namespace: rns },
  ];
  await reviewAccess(client, checks);
  const denied = accessDeniedLine(checks);
  if (denied) throw new InputError(denied);
  await checkRecorderAccount(client, rns, o.serviceAccount);
  const nodes = o.nodes.length ? o.nodes
    : (await api<{ items: KubeObject[] }>('list nodes', 'GET', '/api/v1/nodes')).items.map((n) => n.metadata?.name ?? '').filter(Boolean).sort();
  const stem = out.replace(/\.rtb$/, '');
  const pods = nodes.map((node, i) => ({ node, pod: `rolltrace-collect-${session}-${i}` }));
  const created: string[] = [];
  let aborted = false;
  let abort: () => void = () => undefined;
  const abortP = new Promise<never>((_, rej) => { abort = () => { aborted = true; rej(new Aborted('interrupted')); }; });
  abortP.catch(() => undefined);
  process.on('SIGINT', abort);
  process.on('SIGTERM', abort);
  const guard = <T>(p: Promise<T>) => Promise.race([p, abortP]);
  const recs: Recorder[] = [];
  try {
    for (const p of pods) {
      await guard(api('create the collector pod', 'POST', `/api/v1/namespaces/${enc(rns)}/pods`,
        collectorPod({ name: p.pod, namespace: rns, session, node: p.node, image, pullPolicy, serviceAccount: o.serviceAccount }), undefined, rns));
      created.push(p.pod);
    }
    const t0 = Date.now();
    for (const p of pods) {
      for (;;) {
        const pod = await guard(api('read the collector pod', 'GET', `/api/v1/namespaces/${enc(rns)}/pods/${enc(p.pod)}`, undefined, undefined, rns));
        const problem = podStartProblem(pod as Parameters<typeof podStartProblem>[0], o.image ? 'pull it into the node or check --image' : LOAD_IMAGE_HINT);
        if (problem) throw new InputError(problem);
        if ((pod.status as { phase?: string } | undefined)?.phase === 'Running') break;
        if (Date.now() - t0 > 120_000) throw new InputError(`the collector pod on node ${p.node} did not start within 120 s (kubectl -n ${rns} describe pod ${p.pod})`);
        await guard(sleep(500));
      }
      const listing = new PassThrough();
      let text = '';
      listing.on('data', (b: Buffer) => { text += b; });
      await guard(execIn(kc, rns, p.pod, ['sh', '-c', `for f in ${NODE_BUNDLES}/*.rtb ${NODE_BUNDLES}/*.rtb-wal; do [ -f "$f" ] && stat -c '%s %Y %n' "$f"; done; true`], listing));
      const { newest, open } = pickBundle(text);
      for (const f of open) say(`node ${p.node}: ${f} is still being recorded (delete the DaemonSet or Job first); not collected`);
      if (!newest) { say(`node ${p.node}: no closed bundle in ${NODE_BUNDLES}`); continue; }
      const r: Recorder = { node: p.node, pod: p.pod, bundle: newest.path, local: `${stem}.${p.node}.rtb`, size: newest.size, recording: false, exit: 0 };
      if (existsSync(r.local)) throw new InputError(`${r.local} already exists; choose another --out`);
      say(`node ${p.node}: ${newest.path} (${mib(newest.size)})`);
      await guard(copyBundle(kc, rns, r));
      recs.push(r);
      if (o.delete) await guard(execIn(kc, rns, p.pod, ['rm', '-f', r.bundle], null));
    }
  } catch (e) {
    await removePods(client, rns, created, []);
    process.off('SIGINT', abort);
    process.off('SIGTERM', abort);
    for (const r of recs) rmSync(r.local, { force: true });
    if (e instanceof Aborted || aborted) { say('interrupted: collector pods removed'); return 130; }
    throw e;
  }
  await removePods(client, rns, created, []);
  process.off('SIGINT', abort);
  process.off('SIGTERM', abort);
  if (!recs.length) throw new InputError(`no closed bundle on ${nodes.length} node(s) in ${NODE_BUNDLES}: nothing to collect`);
  if (recs.length === 1) renameSync(recs[0]!.local, out);
  return await mergeAndAnalyze(recs.length === 1 ? [{ ...recs[0]!, local: out }] : recs, out);
}

async function reviewAccess(client: KubeClient, checks: AccessCheck[]): Promise<void> {
  await Promise.all(checks.map(async (c) => {
    try {
      const r = await client.request<{ status?: { allowed?: boolean; reason?: string } }>('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1', kind: 'SelfSubjectAccessReview',
        spec: { resourceAttributes: { namespace: c.namespace, verb: c.verb, group: c.group, resource: c.resource, subresource: c.subresource } },
      });
      c.allowed = r?.status?.allowed === true;
      c.reason = r?.status?.reason;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) throw new InputError(apiErrorLine(401, e.body, 'check access'));
      // a cluster without SelfSubjectAccessReview: the API's own 403 says it later
    }
  }));
}

async function checkRecorderAccount(client: KubeClient, ns: string, sa: string): Promise<void> {
  const rbac = join(packageRoot() ?? '.', 'deploy', 'rbac.yaml');
  try {
    await client.request('GET', `/api/v1/namespaces/${enc(ns)}/serviceaccounts/${enc(sa)}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      throw new InputError(`ServiceAccount ${ns}/${sa} (the recorders' read access to the API) does not exist: \`kubectl apply -f ${rbac}\` once per cluster, or --recorder-namespace/--service-account`);
    }
    // 403: the user may not read service accounts; the pod creation tells if it is missing
  }
}

async function podLog(client: KubeClient, ns: string, pod: string): Promise<string> {
  try {
    return (await client.requestText('GET', `/api/v1/namespaces/${enc(ns)}/pods/${enc(pod)}/log?container=${CONTAINER}`)).text;
  } catch (e) {
    if (e instanceof ApiError && e.status === 400) return ''; // container not started yet
    if (e instanceof ApiError) throw new InputError(apiErrorLine(e.status, e.body, `read the recorder's log`, { namespace: ns }));
    throw e;
  }
}

const lastLines = (log: string, n: number) => log.trim().split('\n').slice(-n).join(' | ').slice(0, 400) || '(no output)';

/** Wait for the rollout to complete (kubectl rollout status, plus: no pod still terminating). */
async function waitRollout(o: PluginOptions, ns: string, dpath: string, selector: string,
  api: <T = KubeObject>(action: string, method: string, path: string, body?: unknown, ct?: string, errNs?: string) => Promise<T>, needStart: boolean,
  cancel: { cancelled: boolean }): Promise<'done' | 'timeout'> {
  const t0 = Date.now();
  let last = '';
  let started = !needStart;
  const gen0 = needStart ? ((await api('read the Deployment', 'GET', dpath, undefined, undefined, ns)).metadata as { generation?: number })?.generation ?? 0 : 0;
  while (!cancel.cancelled) {
    const d = await api('read the Deployment', 'GET', dpath, undefined, undefined, ns);
    const pods = await api<{ items: KubeObject[] }>('list the Deployment\'s pods', 'GET', `/api/v1/namespaces/${enc(ns)}/pods?${new URLSearchParams({ labelSelector: selector })}`, undefined, undefined, ns);
    const st = rolloutStatus(d, pods.items.filter((p) => !!p.metadata?.deletionTimestamp).length);
    if (!started && (!st.done || ((d.metadata as { generation?: number })?.generation ?? 0) > gen0)) started = true;
    if (started && st.reason !== last) { say(`rollout: ${st.reason}`); last = st.reason; }
    if (started && st.done) return 'done';
    if (Date.now() - t0 > o.timeout * 1000) { say(`rollout: not complete after ${o.timeout} s (${st.reason}); collecting what was recorded`); return 'timeout'; }
    await sleep(500);
  }
  return 'timeout';
}

/** Run a command in the recorder container; resolve when it ended (exit status checked). */
function execIn(kc: ReturnType<typeof loadKubeConfig>, ns: string, pod: string, cmd: string[], stdout: Writable | null): Promise<void> {
  return new Promise((resolve, reject) => {
    const errBuf: Buffer[] = [];
    const stderr = new PassThrough();
    stderr.on('data', (b: Buffer) => errBuf.push(b));
    let status: { status?: string; message?: string } | null = null;
    new Exec(kc).exec(ns, pod, CONTAINER, cmd, stdout, stderr, null, false, (s) => { status = s as typeof status; })
      .then((ws) => {
        ws.on('close', () => {
          const st = status as { status?: string; message?: string } | null;
          if (st && st.status !== 'Success') reject(new InputError(`${cmd.join(' ')} in pod ${pod} failed: ${st.message ?? ''} ${Buffer.concat(errBuf).toString().trim()}`.trim()));
          else resolve();
        });
        ws.on('error', (e: Error) => reject(new InputError(`exec in pod ${pod}: ${e.message}`)));
      }, (e: Error) => {
        const m = /Unexpected server response: (\d+)/.exec(e.message);
        reject(new InputError(m?.[1] === '403'
          ? `RBAC: you cannot create pods/exec in namespace ${ns} (\`kubectl auth can-i create pods/exec -n ${ns}\` says no)`
          : `exec in pod ${pod}: ${e.message}`));
      });
  });
}

/** Copy the bundle out of the pod (exec cat), with its size on the terminal while it comes. */
async function copyBundle(kc: ReturnType<typeof loadKubeConfig>, ns: string, r: Recorder): Promise<void> {
  const tmp = `${r.local}.part`;
  const file = createWriteStream(tmp);
  let got = 0;
  let lastSaid = 0;
  const counter = new PassThrough();
  counter.on('data', (b: Buffer) => {
    got += b.length;
    if (Date.now() - lastSaid > 1000) { lastSaid = Date.now(); say(`node ${r.node}: copying ${mib(got)} of ${mib(r.size)}`); }
  });
  counter.pipe(file);
  const written = new Promise<void>((res, rej) => { file.on('finish', res); file.on('error', rej); });
  try {
    await execIn(kc, ns, r.pod, ['cat', r.bundle], counter);
    if (!counter.writableEnded) counter.end();
    await written;
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  const size = statSync(tmp).size;
  if (size !== r.size) { rmSync(tmp, { force: true }); throw new InputError(`copy of ${r.bundle} from node ${r.node} is ${size} bytes, the node has ${r.size}`); }
  renameSync(tmp, r.local);
  say(`node ${r.node}: bundle ${mib(size)} -> ${basename(r.local)}`);
}

/** Delete the pods and wait until they are gone (the recorder closes its bundle on SIGTERM first). */
async function removePods(client: KubeClient, ns: string, pods: string[], leftOn: Recorder[]): Promise<void> {
  if (!pods.length) return;
  say(`removing ${pods.length} recorder pod(s)`);
  await Promise.all(pods.map((p) => client.request('DELETE', `/api/v1/namespaces/${enc(ns)}/pods/${enc(p)}`).catch(() => undefined)));
  const t0 = Date.now();
  let left = pods;
  while (left.length && Date.now() - t0 < 60_000) {
    await sleep(500);
    const still: string[] = [];
    for (const p of left) {
      try { await client.request('GET', `/api/v1/namespaces/${enc(ns)}/pods/${enc(p)}`); still.push(p); } catch (e) {
        if (!(e instanceof ApiError && e.status === 404)) still.push(p);
      }
    }
    left = still;
  }
  if (left.length) say(`pods still terminating after 60 s: ${left.join(', ')} (kubectl -n ${ns} delete pod ${left.join(' ')})`);
  for (const r of leftOn) say(`node ${r.node}: what was recorded stays on the node in ${r.bundle}`);
}

/**
 * The lab's control process. It runs INSIDE the node namespace (lab/cli.ts re-execs it there with
 * `ip netns exec`), so the API server listens on 127.0.0.1 of the node, where the recorder runs too.
 * It starts the control plane, the kubelet, kube-proxy and a conntrack reader, creates the Deployment
 * and Service, runs the real recorder (or, without one, drives the rollout and traffic itself), writes
 * the truth file and stops everything it started. Usage: node --import tsx lab/run.ts CONFIG.json (or node dist/lab/run.js CONFIG.json)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startControlPlane, makeDeployment, makeService, rolloutComplete, type ControlPlane, type Change } from './controlplane.js';
import { KubeClient } from './kube.js';
import { Kubelet } from './node/kubelet.js';
import { KubeProxy } from './kubeproxy/proxy.js';
import { createInterface } from 'node:readline';
import { parseConntrackLine } from '../recorder/sources/conntrack/parse.js';
import { CONNTRACK_ARGS } from '../recorder/sources/conntrack/index.js';
import type { ConntrackRow } from '../schemas/rows.js';
import { LabState } from './state.js';
import { nowNs, settleRecorder, sleep } from './sys.js';
import { buildTruth, type ClientResult, type SliceChange } from './truth.js';
import { BACKEND_PORT, getScenario, NODE2_NAME, node2Out, NODE_NAME, SERVICE_PORT, VIP, type Scenario } from './scenarios/index.js';
import type { Node2Net, NodeNet } from './node/netns.js';
import { writeKubeconfig } from './kubeconfig.js';

export interface RunConfig {
  prefix: string;
  scenario: string;
  seed: number;
  out: string | null;
  truth: string | null;
  repoRoot: string;
  /** where lab/ and recorder/ are: repoRoot (sources under tsx) or repoRoot/dist (compiled) */
  codeRoot: string;
  workDir: string;
  node: NodeNet;
  /** the second node, for scenarios with one (remote clients) */
  node2?: Node2Net | null;
  /** 'run': record and exit; 'up': stay up until SIGTERM */
  mode: 'run' | 'up';
  /** seconds to wait for the recorder before stopping it */
  recorderTimeoutS?: number;
  /**
   * a strategic merge patch (e.g. the analysis' recommendation.patch) applied to the Deployment once it
   * is ready, as `kubectl patch deployment web --type strategic -p …` would; its rollout completes before recording
   */
  patch?: Record<string, unknown> | null;
  /** force the lab's own rollout + traffic even when the recorder exists */
  noRecorder?: boolean;
}

const say = (kind: string, o: Record<string, unknown> = {}) => process.stdout.write(`LAB ${JSON.stringify({ kind, ...o })}\n`);

export async function labMain(cfg: RunConfig): Promise<number> {
  const sc = getScenario(cfg.scenario) as Scenario;
  const state = new LabState(cfg.prefix);
  state.pid(process.pid);
  const startNs = nowNs();
  let stopping = false;
  const stopWaiters: Array<() => void> = [];
  const onSignal = () => { stopping = true; for (const w of stopWaiters.splice(0)) w(); };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  const stopped = new Promise<void>((r) => stopWaiters.push(r));

  // a child that cannot be spawned (ENOENT) or killed: stop like on a signal, end with an error
  let failed: Error | null = null;
  const fail = (e: Error) => { if (!failed) failed = e; onSignal(); };
  const children: ChildProcess[] = [];
  const startChild = (cmd: string, args: string[]) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    c.on('error', (e) => fail(new Error(`lab: ${cmd}: ${e.message}`)));
    if (c.pid) state.pid(c.pid);
    children.push(c);
    return c;
  };

  let cp: ControlPlane | null = null, kubelet: Kubelet | null = null, proxy: KubeProxy | null = null, proxy2: KubeProxy | null = null;
  const node2 = sc.secondNode && cfg.node2 ? cfg.node2 : null;
  const slices: SliceChange[] = [];
  const ct: ConntrackRow[] = [];
  let ctSkipped = 0, ctEnobufs = 0;
  const clientResults: ClientResult[] = [];
  let recorder = { ran: false, exitCode: null as number | null, reason: null as string | null };
  let code = 0;
  try {
    const kubeconfigPath = join(cfg.workDir, 'kubeconfig');
    // with a second node the API server is reached from there too (over the link, inside the lab only)
    cp = await startControlPlane({ host: node2 ? '0.0.0.0' : '127.0.0.1', port: 6443, nodeName: NODE_NAME, kubeconfigPath, namespace: 'default',
      endpointDelayMs: sc.endpointDelayMs, nodeIP: cfg.node.nodeEth0Ip ?? cfg.node.bridgeIp, serviceCIDR: cfg.node.serviceCIDR });
    cp.store.subscribe((c: Change) => {
      if (c.resource !== 'endpointslices') return;
      const o = c.object as any;
      if (o?.metadata?.labels?.['kubernetes.io/service-name'] !== 'web') return;
      slices.push({ ts_ns: nowNs(), type: c.type, endpoints: c.type === 'DELETED' ? [] : (o.endpoints ?? []).map((e: any) => ({
        ip: e.addresses?.[0], ready: e.conditions?.ready ?? true, serving: e.conditions?.serving ?? e.conditions?.ready ?? true, terminating: e.conditions?.terminating ?? false })) });
    });
    const client = new KubeClient(cp.url);
    // conntrack: the lab's own reader of the kernel's table (node ns), with the recorder's arguments
    // (-b: a big netlink buffer) and parser
    const ctp = startChild('conntrack', CONNTRACK_ARGS);
    createInterface({ input: ctp.stdout! }).on('line', (line) => {
      const p = parseConntrackLine(line);
      if (p.t === 'row') ct.push(p.row); else if (p.t === 'malformed') ctSkipped++;
    });
    createInterface({ input: ctp.stderr! }).on('line', (line) => {
      // the kernel dropped events the lab will never see: the truth may miss failures
      if (/ENOBUFS|losing events/i.test(line)) { if (ctEnobufs++ === 0) say('conntrack-enobufs', { line: line.trim() }); }
    });
    kubelet = new Kubelet({ client, nodeName: NODE_NAME, node: cfg.node, state, backendPath: join(cfg.codeRoot, 'lab/backend/server.mjs'), logDir: cfg.workDir });
    await kubelet.start();
    proxy = new KubeProxy({ client, nodeName: NODE_NAME, mode: sc.mode, podCIDR: cfg.node.podCIDR, serviceCIDR: cfg.node.serviceCIDR,
      nodePortIPs: [cfg.node.nodeEth0Ip ?? cfg.node.bridgeIp], syncDelayMs: sc.syncDelayMs, minSyncPeriodMs: sc.minSyncPeriodMs });
    await proxy.start();
    const kubeconfig2 = join(cfg.workDir, 'kubeconfig-node2');
    if (node2) {
      writeKubeconfig(kubeconfigPath, 'http://127.0.0.1:6443', { namespace: 'default' });
      writeKubeconfig(kubeconfig2, `http://${node2.node1LinkIp}:6443`, { namespace: 'default' });
      // node 2's kube-proxy: its own rules in its own netns, on its own (slower) schedule
      proxy2 = new KubeProxy({ client, nodeName: NODE2_NAME, mode: sc.mode, netns: node2.nodeNs, podCIDR: cfg.node.podCIDR, serviceCIDR: cfg.node.serviceCIDR,
        nodePortIPs: [node2.node2LinkIp], syncDelayMs: sc.secondNode!.syncDelayMs, minSyncPeriodMs: sc.minSyncPeriodMs });
      await proxy2.start();
    }
    await client.mustOk('POST', '/api/v1/namespaces/default/services', makeService({ name: 'web', clusterIP: VIP, port: SERVICE_PORT, targetPort: BACKEND_PORT,
      selector: { app: 'web' }, type: sc.serviceType, ...(sc.nodePort ? { nodePort: sc.nodePort } : {}), externalTrafficPolicy: sc.externalTrafficPolicy }));
    await client.mustOk('POST', '/apis/apps/v1/namespaces/default/deployments', makeDeployment({ name: 'web', replicas: sc.replicas, labels: { app: 'web' },
      port: BACKEND_PORT, args: sc.backendArgs, maxSurge: sc.maxSurge, maxUnavailable: sc.maxUnavailable,
      terminationGracePeriodSeconds: sc.terminationGracePeriodSeconds, preStopSleepSeconds: sc.preStopSleepSeconds,
      ...(sc.readinessProbe ? { readinessProbe: { path: '/healthz', port: BACKEND_PORT, periodSeconds: 1, failureThreshold: 1 } } : {}) }));
    // ready: the rollout is complete and kube-proxy routes every replica
    const t0 = Date.now();
    for (;;) {
      if (stopping) throw failed ?? new Error('interrupted');
      const d = await client.req('GET', '/apis/apps/v1/namespaces/default/deployments/web');
      const routed = proxy.routedNow().length;
      // and every backend listens (without a readiness probe Ready comes before that)
      const started = new Set(kubelet.events.filter((e) => e.what === 'container-started').map((e) => e.uid));
      const listening = new Set(kubelet.events.filter((e) => e.what === 'backend:listening').map((e) => e.uid));
      const routed2 = proxy2 ? proxy2.routedNow().length : sc.replicas;
      if (d.status < 300 && rolloutComplete(d.json) && routed >= sc.replicas && routed2 >= sc.replicas && [...started].every((u) => listening.has(u))) break;
      if (Date.now() - t0 > 30000) throw new Error('lab: deployment did not become ready in 30 s');
      await sleep(100);
    }
    if (cfg.patch) {
      // the fix applied the way a user applies it, then its own rollout completes before the recorded one
      const g0 = (await client.mustOk('GET', '/apis/apps/v1/namespaces/default/deployments/web')).metadata?.generation ?? 1;
      await client.mustOk('PATCH', '/apis/apps/v1/namespaces/default/deployments/web', cfg.patch, 'application/strategic-merge-patch+json');
      say('patched', { patch: cfg.patch });
      const tp = Date.now();
      for (;;) {
        if (stopping) throw failed ?? new Error('interrupted');
        const d = await client.req('GET', '/apis/apps/v1/namespaces/default/deployments/web');
        const pods = await client.req('GET', '/api/v1/namespaces/default/pods');
        const terminating = (pods.json?.items ?? []).filter((p: any) => p.metadata.deletionTimestamp).length;
        if (d.status < 300 && rolloutComplete(d.json) && (d.json.status?.observedGeneration ?? 0) > g0 && terminating === 0 && proxy.routedNow().length >= sc.replicas) break;
        if (Date.now() - tp > 90000) throw new Error('lab: the patched deployment did not roll out in 90 s');
        await sleep(200);
      }
    }
    const genBefore = (await client.mustOk('GET', '/apis/apps/v1/namespaces/default/deployments/web')).metadata?.generation ?? 1;
    await sleep(300);
    const probeUrl = `http://${VIP}:${SERVICE_PORT}/`;
    const recordCmd = ['bin/rolltrace.mjs', 'record', '--out', cfg.out ?? join(cfg.workDir, 'lab.rtb'), '--kubeconfig', kubeconfigPath,
      '--namespace', 'default', '--deployment', 'web', '--restart', '--probe', probeUrl, '--rate', '20', '--until-rollout-complete', '--iface', 'cni0', ...(sc.client ? ['--iface', 'eth0'] : []), '--settle', '3', '--quiet'];
    say('ready', { url: cp.url, kubeconfig: kubeconfigPath, vip: `${VIP}:${SERVICE_PORT}`, nodeNs: cfg.node.nodeNs, nodePort: sc.nodePort,
      record: `ip netns exec ${cfg.node.nodeNs} node ${join(cfg.repoRoot, 'bin/rolltrace.mjs')} ${recordCmd.slice(1).join(' ')}` });
    if (cfg.mode === 'up') { await stopped; if (failed) throw failed; return 0; }

    // traffic the recorder does not make: the client namespace (NodePort), or everything without a recorder
    const haveRecorder = !cfg.noRecorder && ['record.ts', 'record.js'].some((f) => existsSync(join(cfg.codeRoot, 'recorder', f)));
    const clients: ChildProcess[] = [];
    // results are kept only for the client netns traffic: the VIP traffic's failures come from conntrack
    const startTraffic = (ns: string | null, url: string, keep: boolean, intervalMs = 100, timeoutMs = 1000) => {
      const args = [join(cfg.codeRoot, 'lab/backend/client.mjs'), '--url', url, '--interval-ms', String(intervalMs), '--timeout-ms', String(timeoutMs)];
      const c = ns ? startChild('ip', ['netns', 'exec', ns, 'node', ...args]) : startChild('node', args);
      if (keep) createInterface({ input: c.stdout! }).on('line', (l) => { try { clientResults.push(JSON.parse(l)); } catch { /* not a result */ } });
      else c.stdout!.resume();
      clients.push(c);
    };
    if (sc.client && cfg.node.clientNs) startTraffic(cfg.node.clientNs, `http://${cfg.node.nodeEth0Ip}:${sc.nodePort}/`, true);
    // the remote client: a pod on node 2 sending to the VIP; node 2's rules DNAT it to node 1's pods
    if (node2) startTraffic(node2.clientNs, probeUrl, true, sc.secondNode!.intervalMs);
    if (!haveRecorder) startTraffic(null, probeUrl, false);
    if (sc.slowTraffic) startTraffic(null, `http://${VIP}:${SERVICE_PORT}${sc.slowTraffic.path}`, false, sc.slowTraffic.intervalMs, sc.slowTraffic.timeoutMs);
    if (clients.length) await sleep(1000);

    const timeoutS = cfg.recorderTimeoutS ?? 90;
    // node 2's recorder, in node 2's netns, started first: it waits for the rollout node 1's recorder starts
    let rec2: { exit: Promise<number | null>; kill: (s: NodeJS.Signals) => void } | null = null;
    if (haveRecorder && node2) {
      const out2 = node2Out(cfg.out ?? join(cfg.workDir, 'lab.rtb'));
      const cmd2 = ['netns', 'exec', node2.nodeNs, 'node', 'bin/rolltrace.mjs', 'record', '--out', out2, '--kubeconfig', kubeconfig2, '--namespace', 'default',
        '--deployment', 'web', '--until-rollout-complete', '--iface', 'cni0', '--iface', 'n1link', '--no-strace', '--no-ebpf', '--settle', '3'];
      say('recorder', { node: NODE2_NAME, cmd: ['ip', ...cmd2].join(' ') });
      const log2Path = join(cfg.workDir, 'recorder-node2.log');
      const log2 = openSync(log2Path, 'w');
      const r2 = spawn('ip', cmd2, { cwd: cfg.repoRoot, stdio: ['ignore', log2, log2], env: { ...process.env, NODE_NAME: NODE2_NAME } });
      closeSync(log2);
      if (r2.pid) state.pid(r2.pid);
      const exit = new Promise<number | null>((r) => { r2.on('exit', (c, sg) => r(c ?? (sg ? 128 : null))); r2.on('error', () => r(null)); });
      rec2 = { exit, kill: (sg) => { try { r2.kill(sg); } catch { /* gone */ } } };
      const tr = Date.now();
      while (!/^recording/m.test(existsSync(log2Path) ? readFileSync(log2Path, 'utf8') : '') && Date.now() - tr < 20000) {
        if (await Promise.race([exit.then(() => true), sleep(100).then(() => false)])) break;
      }
      await sleep(500);
    }
    if (haveRecorder) {
      say('recorder', { cmd: recordCmd.join(' ') });
      // a file, not a pipe: node's pipes are sockets and tools under the recorder may open /dev/stdout
      const recLogPath = join(cfg.workDir, 'recorder.log');
      const recLog = openSync(recLogPath, 'w');
      const rec = spawn('node', recordCmd, { cwd: cfg.repoRoot, stdio: ['ignore', recLog, recLog], ...(node2 ? { env: { ...process.env, NODE_NAME } } : {}) });
      closeSync(recLog);
      const echo = () => { try { process.stderr.write(readFileSync(recLogPath, 'utf8')); } catch { /* none */ } };
      rec.on('exit', echo);
      if (rec.pid) state.pid(rec.pid);
      recorder.ran = true;
      const exit = new Promise<number | null>((r) => {
        rec.on('exit', (c, s) => r(c ?? (s ? 128 : null)));
        rec.on('error', (e) => { process.stderr.write(`lab: recorder: ${e.message}\n`); r(null); });
      });
      const res = await Promise.race([exit, sleep(timeoutS * 1000).then(() => 'timeout' as const), stopped.then(() => 'stopped' as const)]);
      Object.assign(recorder, await settleRecorder(rec, exit, res, 10000));
    } else {
      recorder.reason = 'recorder/record.ts not present: the lab restarted the Deployment and sent the traffic itself';
    }
    if (rec2) {
      const r2 = await Promise.race([rec2.exit, sleep(20000).then(() => 'timeout' as const)]);
      if (r2 === 'timeout') { rec2.kill('SIGINT'); await Promise.race([rec2.exit, sleep(10000)]); rec2.kill('SIGKILL'); }
      say('recorder-done', { node: NODE2_NAME, exitCode: r2 === 'timeout' ? null : r2 });
      try { process.stderr.write(readFileSync(join(cfg.workDir, 'recorder-node2.log'), 'utf8')); } catch { /* none */ }
    }
    // without a recorder (or if it failed before restarting), restart like `kubectl rollout restart`
    const dep = await client.mustOk('GET', '/apis/apps/v1/namespaces/default/deployments/web');
    const restarted = dep.spec?.template?.metadata?.annotations?.['kubectl.kubernetes.io/restartedAt'];
    if (!restarted && !stopping) {
      await client.mustOk('PATCH', '/apis/apps/v1/namespaces/default/deployments/web',
        { spec: { template: { metadata: { annotations: { 'kubectl.kubernetes.io/restartedAt': new Date().toISOString() } } } } }, 'application/strategic-merge-patch+json');
    }
    // wait for the rollout and for every old pod to be gone (the truth needs their exits)
    const t1 = Date.now();
    while (!stopping && Date.now() - t1 < 60000) {
      const d = await client.req('GET', '/apis/apps/v1/namespaces/default/deployments/web');
      const pods = await client.req('GET', '/api/v1/namespaces/default/pods');
      const terminating = (pods.json?.items ?? []).filter((p: any) => p.metadata.deletionTimestamp).length;
      if (d.status < 300 && rolloutComplete(d.json) && (d.json.status?.observedGeneration ?? 0) > genBefore && terminating === 0) break;
      await sleep(200);
    }
    await sleep(clients.length ? 1500 : 500);
    for (const c of clients) c.kill('SIGTERM');
    await sleep(clients.length ? 800 : 0);
    if (failed) throw failed;
    say('done', { recorder });
  } catch (e) {
    say('error', { message: (e as Error).message });
    code = 1;
  } finally {
    const endNs = nowNs();
    await proxy?.stop().catch(() => undefined);
    await proxy2?.stop().catch(() => undefined);
    await kubelet?.stop().catch(() => undefined);
    await sleep(200);
    for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    await cp?.stop().catch(() => undefined);
    if (cfg.truth && cfg.mode === 'run') {
      const truth = buildTruth({
        scenario: sc.name, seed: cfg.seed, node: NODE_NAME, mode: sc.mode,
        service: { namespace: 'default', name: 'web', vip: VIP, port: SERVICE_PORT, nodePort: sc.nodePort, externalTrafficPolicy: sc.externalTrafficPolicy },
        startNs, endNs, recorder, kubelet: kubelet?.events ?? [], syncs: proxy?.syncs ?? [], slices, conntrack: { events: ct, skipped: ctSkipped, enobufs: ctEnobufs },
        clientResults, backendPort: BACKEND_PORT, ...(proxy2 ? { node2: { node: NODE2_NAME, syncs: proxy2.syncs } } : {}),
      });
      writeFileSync(cfg.truth, JSON.stringify(truth, null, 2) + '\n');
      if (process.env.ROLLTRACE_LAB_DEBUG) writeFileSync(cfg.truth + '.ct.json', JSON.stringify(ct));
      say('truth', { path: cfg.truth, pods: truth.pods.length, failures: truth.failures.length, ...(ctEnobufs ? { conntrackEnobufs: ctEnobufs } : {}) });
    }
  }
  return code;
}

if (process.argv[1] && /lab[\\/]run\.[jt]s$/.test(process.argv[1])) {
  const cfg = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as RunConfig;
  labMain(cfg).then((c) => process.exit(c), (e) => { process.stderr.write(`lab: ${(e as Error).stack}\n`); process.exit(1); });
}

/**
 * `rolltrace lab run --real --scenario NAME --out FILE [--truth FILE]`: a scenario on the real node.
 * Brings the node up with the scenario's Deployment and Service, records the rollout with the real
 * recorder (`rolltrace record --restart`, run inside the node netns with `nsenter --net=`), then writes
 * the truth from the components' own records (lab/real/truth.ts) plus the lab's own reader of the
 * kernel's conntrack table and its own EndpointSlice watch, and removes the node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, cpSync, existsSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { InputError, isInputError } from '../../schemas/errors.js';
import type { ConntrackRow } from '../../schemas/rows.js';
import { parseConntrackLine } from '../../recorder/sources/conntrack/parse.js';
import { CONNTRACK_ARGS } from '../../recorder/sources/conntrack/index.js';
import { BACKEND_PORT, getScenario, NODE2_NAME, NODE_NAME, node2Out, SCENARIOS, SERVICE_PORT, VIP, type Scenario } from '../scenarios/index.js';
import { readPatch } from '../cli.js';
import { buildTruth, type ClientResult, type SliceChange, type Truth } from '../truth.js';
import { nowNs, settleRecorder, sleep } from '../sys.js';
import { k8sBin } from './build.js';
import { NET, parseProxyMode, paths, realLayout, type ProxyMode } from './config.js';
import { newRealPrefix, realSession, type RealSession } from './cli.js';
import { applyRealPatch } from './patch.js';
import { cleanupRealLab, RealState } from './state.js';
import { containerdRecords, kubeletRecords, kubeProxySyncs, parseKlog, parseStamps, realKubeletEvents, unansweredFlows, type Stamp } from './truth.js';
import type { RealPreStop } from './workload.js';
import { node2Truth, startNode2Recorder, startRealNode2, type RealNode2 } from './node2.js';
import { packageRoot } from '../../schemas/version.js';

/** where lab/ and recorder/ live: the repository (tsx) or dist/ (compiled) */
const codeRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** the package root, where bin/rolltrace.mjs is */
const repoRoot = packageRoot() ?? codeRoot;
const say = (kind: string, o: Record<string, unknown> = {}) => process.stdout.write(`LAB ${JSON.stringify({ kind, ...o })}\n`);

/** Scenario variants only the real node has (the fast lab's scenarios run as they are). */
export const REAL_VARIANTS: Record<string, { base: string; description: string; preStop?: RealPreStop; patch?: Partial<Scenario> }> = {
  'prestop-exec': { base: 'prestop', description: 'preStop exec `sleep 2` (busybox in the image) outlasts the rule lag; zero failures', preStop: { exec: ['sleep', '2'] } },
  'prestop-sleep-action': { base: 'prestop', description: 'the native lifecycle.preStop.sleep (2 s); zero failures', preStop: { sleepSeconds: 2 } },
  'ignore-sigterm': { base: 'race', description: 'the app ignores SIGTERM (as a PID 1 without a handler does): SIGKILL at the end of a 3 s grace period',
    patch: { backendArgs: ['--shutdown', 'ignore'], terminationGracePeriodSeconds: 3 } },
  'local-policy': { base: 'local-blackhole', description: 'Local NodePort, the only local endpoint terminates but keeps serving 3 s: kube-proxy routes to it (ProxyTerminatingEndpoints) until the new pod is ready',
    patch: { backendArgs: ['--shutdown', 'drain', '--drain-ms', '4000', '--start-delay-ms', '1500'] } },
};
export function realScenario(name: string): { sc: Scenario; preStop?: RealPreStop } | null {
  const v = Object.prototype.hasOwnProperty.call(REAL_VARIANTS, name) ? REAL_VARIANTS[name]! : null;
  if (v) return { sc: { ...SCENARIOS[v.base]!, ...v.patch, name, description: v.description }, preStop: v.preStop };
  const sc = getScenario(name);
  return sc ? { sc } : null;
}

/** Concatenated JSON documents (kubectl -w -o json) -> each document as it completes. */
export function jsonStream(onDoc: (o: any) => void): (chunk: string) => void {
  let buf = '', depth = 0, inStr = false, esc = false, start = -1;
  return (chunk) => {
    const base = buf.length;
    buf += chunk;
    for (let i = base; i < buf.length; i++) {
      const c = buf[i];
      if (inStr) { if (esc) esc = false; else if (c === '\\') esc = true; else if (c === '"') inStr = false; continue; }
      if (c === '"') inStr = true;
      else if (c === '{') { if (depth++ === 0) start = i; }
      else if (c === '}' && --depth === 0 && start >= 0) {
        try { onDoc(JSON.parse(buf.slice(start, i + 1))); } catch { /* not JSON */ }
        start = -1;
      }
    }
    if (depth === 0) buf = '';
    else if (start > 0) { buf = buf.slice(start); start = 0; }
  };
}

export interface RealRunOptions {
  scenario: string; out: string; truth?: string; keep?: boolean; mode?: ProxyMode; proxyMode?: string; recorderTimeoutS?: number;
  /** a strategic merge patch of Deployment web (JSON text or a file), applied with kubectl and rolled out before recording */
  patch?: string;
}

export async function runRealRun(opts: RealRunOptions): Promise<number> {
  const mode = opts.mode ?? parseProxyMode(opts.proxyMode);
  if (process.getuid?.() !== 0) throw new InputError('the real node needs root (namespaces, cgroups, containerd)');
  const found = realScenario(opts.scenario);
  if (!found) throw new InputError(`unknown scenario "${opts.scenario}" (one of: ${[...Object.keys(SCENARIOS), ...Object.keys(REAL_VARIANTS)].join(', ')})`);
  if (opts.out && existsSync(opts.out)) throw new InputError(`--out ${opts.out} exists; remove it or choose another path`);
  const out = resolve(opts.out);
  const patch = opts.patch ? readPatch(opts.patch) : null;
  const truthPath = opts.truth ? resolve(opts.truth) : null;
  const prefix = newRealPrefix();
  const state = new RealState(prefix);
  const p = paths(realLayout(prefix));
  const startNs = nowNs();
  let stopping = false;
  const onSig = () => { stopping = true; };
  process.on('SIGINT', onSig);
  process.on('SIGTERM', onSig);
  const children: ChildProcess[] = [];
  const startIn = (ns: string, cmd: string, args: string[]) => {
    const c = spawn('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    if (c.pid) state.pid(c.pid);
    children.push(c);
    return c;
  };
  let session: RealSession | null = null;
  let code = 0;
  let inputError: Error | null = null;
  /** the truth covers the recorded rollout, not the patch's own (its pods were deleted before this) */
  let recordedFromNs = 0;
  const ct: ConntrackRow[] = [];
  let ctSkipped = 0, ctEnobufs = 0;
  // two-node: node 2 and its own conntrack reader
  let node2: RealNode2 | null = null;
  const ct2: ConntrackRow[] = [];
  const slices: SliceChange[] = [];
  const clientResults: ClientResult[] = [];
  const recorder = { ran: false, exitCode: null as number | null, reason: null as string | null };
  const sc = found.sc;
  try {
    say('starting', { prefix, scenario: sc.name, mode: mode ?? sc.mode });
    session = await realSession({ prefix, scenario: sc, mode, preStop: found.preStop });
    if (patch) await applyRealPatch(session.np, patch, sc.replicas, say);
    recordedFromNs = nowNs();
    const nodeNs = session.node.nodeNs;
    // the lab's own conntrack reader (the kernel's records), with the recorder's arguments and parser
    const readConntrack = (ns: string, rows: ConntrackRow[]) => {
      const ctp = startIn(ns, 'conntrack', CONNTRACK_ARGS);
      createInterface({ input: ctp.stdout! }).on('line', (line) => {
        const r = parseConntrackLine(line);
        if (r.t === 'row') rows.push(r.row); else if (r.t === 'malformed') ctSkipped++;
      });
      createInterface({ input: ctp.stderr! }).on('line', (line) => { if (/ENOBUFS|losing events/i.test(line)) ctEnobufs++; });
    };
    readConntrack(nodeNs, ct);
    if (sc.secondNode) {
      node2 = await startRealNode2({ state, np: session.np, mode: session.node.mode, say: (s) => process.stderr.write(`[lab --real] ${s}\n`) });
      readConntrack(node2.nodeNs, ct2);
    }
    // the EndpointSlices as the API server serves them, stamped on receipt
    const sw = startIn(nodeNs, k8sBin('kubectl'), ['--kubeconfig', p.kubeconfigNode, 'get', 'endpointslices', '-n', 'default',
      '-l', 'kubernetes.io/service-name=web', '--watch', '--output-watch-events', '-o', 'json']);
    sw.stdout!.setEncoding('utf8');
    sw.stdout!.on('data', jsonStream((o) => {
      const obj = o?.object ?? o;
      slices.push({ ts_ns: nowNs(), type: o?.type ?? 'MODIFIED', endpoints: o?.type === 'DELETED' ? [] : (obj?.endpoints ?? []).map((e: any) => ({
        ip: e.addresses?.[0], ready: e.conditions?.ready ?? true, serving: e.conditions?.serving ?? e.conditions?.ready ?? true, terminating: e.conditions?.terminating ?? false })) });
    }));
    sw.stderr!.resume();
    const clients: ChildProcess[] = [];
    const traffic = (ns: string, url: string, keep: boolean, intervalMs = 100, timeoutMs = 1000) => {
      const c = startIn(ns, process.execPath, [join(codeRoot, 'lab/backend/client.mjs'), '--url', url, '--interval-ms', String(intervalMs), '--timeout-ms', String(timeoutMs)]);
      if (keep) createInterface({ input: c.stdout! }).on('line', (l) => { try { clientResults.push(JSON.parse(l)); } catch { /* not a result */ } });
      else c.stdout!.resume();
      c.stderr!.resume();
      clients.push(c);
    };
    if (sc.client && sc.nodePort) traffic(session.node.clientNs, `http://${NET.nodeIp}:${sc.nodePort}/`, true);
    // the remote client: a pod on node 2 sending to the VIP, DNATed by node 2's kube-proxy to node 1's pods
    if (node2) traffic(node2.clientNs, `http://${VIP}:${SERVICE_PORT}/`, true, sc.secondNode!.intervalMs);
    if (sc.slowTraffic) traffic(nodeNs, `http://${VIP}:${SERVICE_PORT}${sc.slowTraffic.path}`, false, sc.slowTraffic.intervalMs, sc.slowTraffic.timeoutMs);
    await sleep(clients.length ? 1000 : 300);

    const recordArgs = [join(repoRoot, 'bin/rolltrace.mjs'), 'record', '--out', out, '--kubeconfig', p.kubeconfigNode, '--namespace', 'default',
      '--deployment', 'web', '--restart', '--probe', `http://${VIP}:${SERVICE_PORT}/`, '--rate', '20', '--until-rollout-complete',
      '--iface', 'cni0', '--iface', 'eth0', '--settle', '3', '--quiet'];
    // node 2's recorder first: it waits for the rollout node 1's recorder starts
    const rec2 = node2 ? await startNode2Recorder({ state, node2, out: node2Out(out), repoRoot, nodePath: process.execPath, logs: p.logs }) : null;
    if (rec2) say('recorder', { node: node2!.name, cmd: rec2.cmd });
    say('recorder', { cmd: `nice -n -10 nsenter --net=/run/netns/${nodeNs} node ${recordArgs.join(' ')}` });
    const recLogPath = join(p.logs, 'recorder.log');
    const recLog = openSync(recLogPath, 'w');
    // at a higher priority than the node's own processes: its sources stamp on receipt (nft monitor), and a
    // busy machine otherwise delays the read by tens of ms (what a loaded node's operator would do too)
    const rec = spawn('nice', ['-n', '-10', 'nsenter', `--net=/run/netns/${nodeNs}`, '--', process.execPath, ...recordArgs], { cwd: repoRoot, stdio: ['ignore', recLog, recLog],
      ...(node2 ? { env: { ...process.env, NODE_NAME } } : {}) });
    closeSync(recLog);
    if (rec.pid) state.pid(rec.pid);
    recorder.ran = true;
    const exit = new Promise<number | null>((r) => { rec.on('exit', (c, s) => r(c ?? (s ? 128 : null))); rec.on('error', () => r(null)); });
    const timeoutS = opts.recorderTimeoutS ?? 120;
    let res: number | null | 'timeout' | 'stopped' | 'tick' = 'tick';
    for (const t0 = Date.now(); res === 'tick';) {
      res = await Promise.race([exit, sleep(500).then(() => 'tick' as const)]);
      if (res !== 'tick') break;
      if (stopping) res = 'stopped';
      else if (Date.now() - t0 > timeoutS * 1000) res = 'timeout';
    }
    Object.assign(recorder, await settleRecorder(rec, exit, res, 15000));
    process.stderr.write(readFileSync(recLogPath, 'utf8'));
    if (rec2) {
      const exitCode = await rec2.done(20000);
      say('recorder-done', { node: node2!.name, exitCode });
      process.stderr.write(readFileSync(rec2.log, 'utf8'));
      if (exitCode !== 0) { recorder.reason = `node 2's recorder: exit ${exitCode}`; code = 1; }
    }
    // the truth needs every old pod's end: wait until none is terminating
    for (const t1 = Date.now(); !stopping && Date.now() - t1 < 60000;) {
      const r = session.np.kubectl(['get', 'pods', '-n', 'default', '-o', 'jsonpath={range .items[*]}{.metadata.deletionTimestamp}{"\\n"}{end}'], { allowFail: true });
      if (r.code === 0 && !r.stdout.split('\n').some((l) => l.trim())) break;
      await sleep(300);
    }
    await sleep(clients.length ? 1500 : 800);
    for (const c of clients) c.kill('SIGTERM');
    await sleep(clients.length ? 800 : 0);
    if (stopping) throw new Error('interrupted');
    say('done', { recorder });
  } catch (e) {
    say('error', { message: (e as Error).message });
    if (isInputError(e)) inputError = e;
    code = 1;
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    const endNs = nowNs();
    for (const c of children) { try { c.kill('SIGKILL'); } catch { /* gone */ } }
    if (truthPath && session && !inputError) {
      try {
        const truth = realTruth({ sc, mode: session.node.mode, startNs, endNs, recordedFromNs, recorder, logs: p.logs, stampsDir: session.stamps,
          slices, ct, ctSkipped, ctEnobufs, clientResults, ...(node2 ? { node2: { ct: ct2, clientIp: node2.clientIp } } : {}) });
        writeFileSync(truthPath, JSON.stringify(truth, null, 2) + '\n');
        // the records the truth was read from, for whoever checks it: <truth>.logs/
        const keepDir = `${truthPath}.logs`;
        rmSync(keepDir, { recursive: true, force: true });
        cpSync(p.logs, keepDir, { recursive: true });
        cpSync(session.stamps, join(keepDir, 'stamps'), { recursive: true });
        say('truth', { path: truthPath, pods: truth.pods.length, failures: truth.failures.length });
      } catch (e) { say('error', { message: `truth: ${(e as Error).message}` }); code = 1; }
    }
    if (!opts.keep) {
      const r = cleanupRealLab(prefix);
      say('down', { prefix, killed: r.killed, mounts: r.mounts, netns: r.netns.length });
    } else say('kept', { prefix, kubeconfig: p.kubeconfigHost });
  }
  if (inputError) throw inputError;
  return code === 0 && recorder.exitCode === 0 ? 0 : 1;
}

export function realTruth(i: {
  sc: Scenario; mode: ProxyMode; startNs: number; endNs: number; recordedFromNs?: number; recorder: Truth['recorder']; logs: string; stampsDir: string;
  slices: SliceChange[]; ct: ConntrackRow[]; ctSkipped: number; ctEnobufs: number; clientResults: ClientResult[];
  /** two-node: node 2's conntrack and its client pod's address (its kube-proxy's log is in `logs`) */
  node2?: { ct: ConntrackRow[]; clientIp: string };
}): Truth {
  const year = new Date(i.startNs / 1e6).getFullYear();
  const read = (f: string) => { try { return readFileSync(join(i.logs, f), 'utf8'); } catch { return ''; } };
  const stamps = new Map<string, Stamp[]>();
  for (const f of readdirSync(i.stampsDir)) if (f.endsWith('.jsonl')) stamps.set(f.slice(0, -6), parseStamps(readFileSync(join(i.stampsDir, f), 'utf8')));
  const kubelet = realKubeletEvents({ namespace: 'default', stamps, kubelet: kubeletRecords(parseKlog(read('kubelet.log'), year)), containerd: containerdRecords(read('containerd.log')) });
  const syncs = kubeProxySyncs(parseKlog(read('kube-proxy.log'), year));
  const service = { namespace: 'default', name: 'web', vip: VIP, port: SERVICE_PORT, nodePort: i.sc.nodePort, externalTrafficPolicy: i.sc.externalTrafficPolicy };
  const truth = buildTruth({ scenario: i.sc.name, seed: 1, node: NODE_NAME, mode: i.mode, service, startNs: i.startNs, endNs: i.endNs,
    recorder: i.recorder, kubelet, syncs, slices: i.slices, conntrack: { events: i.ct, skipped: i.ctSkipped, enobufs: i.ctEnobufs },
    clientResults: i.clientResults, backendPort: BACKEND_PORT,
    ...(i.node2 ? { node2: { node: NODE2_NAME, syncs: kubeProxySyncs(parseKlog(read('kube-proxy-node2.log'), year)) } } : {}) });
  // SYNs that nobody ever answered (the pod's network was gone): conntrack has NEW and nothing after
  const isService = (ip: string, port: number) => (ip === VIP && port === SERVICE_PORT) || (i.sc.nodePort != null && port === i.sc.nodePort);
  const ipToPod = new Map(truth.allPods.map((x) => [x.ip, `${x.namespace}/${x.name}`]));
  for (const f of unansweredFlows(i.ct, isService, i.endNs - 1.5e9)) {
    if (truth.failures.some((x) => x.client === f.client)) continue;
    truth.failures.push({ ...f, backendPod: f.backendIp ? ipToPod.get(f.backendIp) ?? null : null, kind: 'timeout', from: 'conntrack' });
  }
  // a client-netns timeout is the same connection as an unanswered SYN conntrack saw on the NodePort
  // (the client logs the end of the attempt, its timeout after the SYN): counted once, with its backend
  const used = new Set<object>();
  truth.failures = truth.failures.filter((f) => {
    if (f.from !== 'client-log' || f.kind !== 'timeout' || i.sc.nodePort == null) return true;
    const twin = truth.failures.find((c) => c.from === 'conntrack' && c.kind === 'timeout' && !used.has(c) && c.service.endsWith(`:${i.sc.nodePort}`)
      && Math.abs(f.atNs - 1e9 - c.atNs) < 250e6);
    if (twin) used.add(twin);
    return !twin;
  });
  if (i.node2 && truth.node2) truth.node2.unmatchedConntrack = node2Truth(truth, { ct: i.node2.ct, clientIp: i.node2.clientIp, clientResults: i.clientResults, isService, endNs: i.endNs });
  truth.failures.sort((a, b) => a.atNs - b.atNs);
  // pods the patch's own rollout replaced (lab run --patch) were gone before the recorded rollout began
  if (i.recordedFromNs) truth.pods = truth.pods.filter((x) => (x.deletionSeenNs ?? Infinity) >= i.recordedFromNs!);
  truth.slices = i.slices;
  return truth;
}

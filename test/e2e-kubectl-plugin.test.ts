/**
 * Issue 10 on the real node (root): `lab up --real` imports the rolltrace image (`npm run image`, built
 * here into a temporary archive: fast once /var/cache/rolltrace/image holds the base layers), then from the
 * host, through the lab's KUBECONFIG only:
 *  - `kubectl rolltrace record deploy/web --restart`: recorder pod, rollout, bundle copied back, analysis;
 *    its failures agree with the probe's own outcomes and with the app's own stamps (the backend pods are
 *    the ones that got SIGTERM, and had closed their listener at the failure), and no pod is left;
 *  - the walls as one line, exit 2, no pod left: image absent on the node, no such node, PodSecurity, RBAC;
 *    Ctrl-C before recording (aborted, exit 130) and while recording (stopped early, still collected);
 *  - deploy/daemonset.yaml with deploy/rbac.yaml: records the rollout, `kubectl rolltrace collect` brings the
 *    bundle out; deploy/job.yaml restarts and records one rollout, `kubectl cp` brings the bundle out.
 * One node for all of it (~1.5 min with the Kubernetes binaries and the image layers cached).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Analysis } from '../schemas/analysis.js';
import { buildKubernetes, k8sBin } from '../lab/real/build.js';
import { cleanupRealLab } from '../lab/real/state.js';
import { kubeProxySyncs, parseKlog, parseStamps, type Stamp } from '../lab/real/truth.js';
import { RULE_RECEIPT_SLACK_NS } from './e2e-truth.js';
import { realLayout } from '../lab/real/config.js';
import { BIN, ROOT } from './helpers/cli.js';
import { runAsync } from './helpers/run.js';

const PLUGIN = join(ROOT, 'bin', 'kubectl-rolltrace.mjs');
const dir = mkdtempSync(join(tmpdir(), 'e2e-kplugin-'));
const archive = join(dir, 'rolltrace-image.tar');
const NODE_DIR = '/var/lib/rolltrace';
const nodeDirExisted = existsSync(NODE_DIR);
const before = new Set(nodeDirExisted ? readdirSync(NODE_DIR) : []);
const beforeSessions = new Set(existsSync(join(NODE_DIR, 'kubectl-rolltrace')) ? readdirSync(join(NODE_DIR, 'kubectl-rolltrace')) : []);
let prefix: string | null = null;
/** tests that have not passed (yet): their bundles are kept for a look */
let kept = 0;
let kubeconfig = '';

interface Run { code: number; stdout: string; stderr: string }
/** A command with stdout/stderr captured; `onErr` sees stderr as it grows (to send a signal at a given line). */
function start(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, onErr?: (s: string, kill: (sig: NodeJS.Signals) => void) => void): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d; });
    p.stderr.on('data', (d: Buffer) => { stderr += d; onErr?.(stderr, (sig) => p.kill(sig)); });
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}
const env = () => ({ ...process.env, KUBECONFIG: kubeconfig });
const plugin = (args: string[], timeoutMs = 180_000, onErr?: Parameters<typeof start>[4], kc?: string) =>
  start(PLUGIN, args, kc ? { ...process.env, KUBECONFIG: kc } : env(), timeoutMs, onErr);
const kubectl = (...a: string[]) => spawnSync(k8sBin('kubectl'), a, { encoding: 'utf8', env: env(), timeout: 120_000 });
const kubectlIn = (input: string, ...a: string[]) => spawnSync(k8sBin('kubectl'), a, { encoding: 'utf8', env: env(), input, timeout: 120_000 });
const podsLeft = () => kubectl('get', 'pods', '-A', '-l', 'app.kubernetes.io/name=rolltrace', '-o', 'name').stdout.trim();
const sessionFilesLeft = () => (existsSync(join(NODE_DIR, 'kubectl-rolltrace')) ? readdirSync(join(NODE_DIR, 'kubectl-rolltrace')) : []).filter((f) => !beforeSessions.has(f));
const oneLine = (r: Run) => r.stderr.trim().split('\n').filter((l) => l.startsWith('kubectl rolltrace:'));

/** the app's own stamps of every pod the lab ran (lab/real/app writes them to a hostPath file per pod) */
function stamps(): Map<string, Stamp[]> {
  const d = join(realLayout(prefix!).state, 'stamps');
  return new Map(readdirSync(d).filter((f) => f.endsWith('.jsonl')).map((f) => [f.replace(/\.jsonl$/, ''), parseStamps(readFileSync(join(d, f), 'utf8'))]));
}

async function analyze(bundle: string): Promise<{ a: Analysis; code: number }> {
  const r = await runAsync(BIN, ['analyze', bundle, '--format', 'json'], { cwd: ROOT, timeoutMs: 120_000 });
  return { a: JSON.parse(r.stdout) as Analysis, code: r.code };
}

/** Failures of the analysis against the truth: the probe's own outcomes and the app's stamps. */
function checkAgainstTruth(bundle: string, a: Analysis): string[] {
  const problems: string[] = [];
  const db = new Database(bundle, { readonly: true });
  const probes = db.prepare('select start_ns, local_addr, local_port, outcome, error from probe_requests').all() as Array<{ start_ns: number; local_addr: string; local_port: number; outcome: string; error: string | null }>;
  db.close();
  if (probes.length < 20) problems.push(`only ${probes.length} probe requests`);
  const byClient = new Map(probes.map((p) => [`${p.local_addr}:${p.local_port}`, p]));
  const failedProbes = probes.filter((p) => p.outcome !== 'ok');
  const failureClients = new Set(a.failures.map((f) => f.client));
  for (const p of failedProbes) if (!failureClients.has(`${p.local_addr}:${p.local_port}`)) problems.push(`probe ${p.local_addr}:${p.local_port} ${p.outcome} (${p.error}) is not among the analysis' failures`);
  const st = stamps();
  for (const f of a.failures) {
    const p = byClient.get(f.client);
    if (p && p.outcome === 'ok') problems.push(`failure ${f.client} (${f.cause}) but the probe says ok`);
    const name = f.backend.pod?.split('/')[1];
    if (!name) {
      // no pod named: right only when every pod that ever held the IP was gone before the recording began
      // (a late packet to a pod of an earlier rollout: the bundle has no record of that pod)
      const holders = [...st].filter(([, x]) => ((x.find((y) => y.ev === 'started')?.ips as string[] | undefined) ?? []).includes(f.backend.ip ?? ''));
      const startNs = Date.parse(a.bundle.start ?? '') * 1e6;
      const alive = holders.filter(([, x]) => !x.some((y) => y.ev === 'exit' && y.ts_ns < startNs)).map(([n]) => n);
      console.log(`[e2e-kplugin] failure ${f.client} -> ${f.backend.ip} (${f.cause}) names no pod; held by ${holders.map(([n]) => n).join(', ') || 'no pod of the lab'}`);
      if (alive.length) problems.push(`failure ${f.client}: backend ${f.backend.ip} named no pod, but ${alive.join(', ')} held it during the recording`);
      continue;
    }
    const s = st.get(name);
    if (!s) { problems.push(`failure ${f.client}: backend ${f.backend.ip} pod ${f.backend.pod} has no stamps`); continue; }
    const ips = (s.find((x) => x.ev === 'started')?.ips as string[] | undefined) ?? [];
    if (!ips.includes(f.backend.ip ?? '')) problems.push(`failure ${f.client}: backend ${f.backend.ip} is not ${name}'s (${ips.join(',')})`);
    if (!s.some((x) => x.ev === 'sigterm')) problems.push(`failure ${f.client}: backend ${name} never got SIGTERM`);
    const closed = s.find((x) => x.ev === 'listener-closed')?.ts_ns;
    const at = Date.parse(f.at) * 1e6;
    if (f.cause === 'listener-closed' && !(closed !== undefined && closed <= at + 5e6)) problems.push(`failure ${f.client} at ${f.at}: listener-closed, but ${name} closed its listener at ${closed}`);
  }
  // the pods this rollout terminated: each one's SIGTERM is in its own stamps, and its verdict is the order
  // of its listener close (its stamps) and the kube-proxy sync that stopped routing to it (kube-proxy's log),
  // judged as test/e2e-real.test.ts does
  const syncs = kubeProxySyncs(parseKlog(readFileSync(join(realLayout(prefix!).state, 'logs', 'kube-proxy.log'), 'utf8'), new Date().getFullYear()));
  for (const p of a.pods.filter((x) => x.sigtermAt)) {
    const s = st.get(p.name);
    const sigterm = s?.find((x) => x.ev === 'sigterm')?.ts_ns;
    if (sigterm === undefined) { problems.push(`pod ${p.name}: SIGTERM in the analysis, none in its stamps`); continue; }
    const closed = s!.find((x) => x.ev === 'listener-closed')?.ts_ns;
    const sync = syncs.find((y) => y.endNs >= sigterm - 5e9 && y.removed.some((r) => r.endsWith(`|${p.ip}:8080`)));
    if (closed === undefined || !sync) { problems.push(`pod ${p.name}: no listener close (${closed}) or no sync removing ${p.ip} in kube-proxy's log`); continue; }
    const want = closed < sync.startNs ? 'listener-closed-before-rule-removed' : closed > sync.endNs + RULE_RECEIPT_SLACK_NS ? 'safe' : null;
    if (want && p.verdict !== want) problems.push(`pod ${p.name}: verdict ${p.verdict}, the truth says ${want}`);
    const rule = p.ruleRemovedAt ? Date.parse(p.ruleRemovedAt) * 1e6 : null;
    if (rule === null || rule < sync.startNs - 1e6 || rule > sync.endNs + RULE_RECEIPT_SLACK_NS) problems.push(`pod ${p.name}: ruleRemovedAt ${p.ruleRemovedAt}, kube-proxy's sync ${sync.seq} ran ${sync.startNs}..${sync.endNs}`);
  }
  return problems;
}

beforeAll(async () => {
  await buildKubernetes({ say: (s) => console.log(`[build] ${s}`) });
  const img = await runAsync(process.execPath, [join(ROOT, 'scripts/image.mjs'), '--out', archive], { cwd: ROOT, timeoutMs: 1_500_000 });
  if (img.code !== 0) throw new Error(`npm run image: ${img.stderr.slice(-800)}`);
  const up = await start(BIN, ['lab', 'up', '--real'], { ...process.env, ROLLTRACE_IMAGE_ARCHIVE: archive }, 240_000);
  prefix = /node (rtr[0-9a-f]{6})/.exec(up.stdout + up.stderr)?.[1] ?? null;
  if (up.code !== 0) throw new Error(`lab up --real: ${up.stderr.slice(-1500)}`);
  kubeconfig = /^KUBECONFIG=(\S+)$/m.exec(up.stdout)![1]!;
  expect(up.stdout).toContain(`rolltrace image: docker.io/library/rolltrace:${JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version} imported from ${archive}`);
  const rbac = kubectl('apply', '-f', join(ROOT, 'deploy/rbac.yaml'));
  if (rbac.status !== 0) throw new Error(`apply rbac.yaml: ${rbac.stderr}`);
}, 30 * 60_000);

afterAll(() => {
  if (prefix) cleanupRealLab(prefix);
  for (const f of sessionFilesLeft()) rmSync(join(NODE_DIR, 'kubectl-rolltrace', f), { force: true });
  if (existsSync(NODE_DIR)) for (const f of readdirSync(NODE_DIR)) if (!before.has(f) && /^(lab-node-.*|rollout)\.rtb/.test(f)) rmSync(join(NODE_DIR, f), { force: true });
  // the directories the hostPath volumes made on this machine (the lab's node is this machine), when empty
  for (const d of [...(before.has('kubectl-rolltrace') ? [] : [join(NODE_DIR, 'kubectl-rolltrace')]), ...(nodeDirExisted ? [] : [NODE_DIR])]) {
    try { rmdirSync(d); } catch { /* absent or not empty */ }
  }
  if (kept) console.log(`[e2e-kplugin] the failing test's bundles are kept in ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
});

describe.sequential('kubectl rolltrace on the real node, from the host', () => {
  it('record deploy/web --restart: recorder pod, rollout, bundle back, the analysis agrees with the probe and the app; no pod left', async () => {
    const out = join(dir, 'web.rtb');
    kept++;
    const r = await plugin(['record', 'deploy/web', '--restart', '--out', out]);
    console.log(`[e2e-kplugin] ${r.stderr.trim().split('\n').join('\n[e2e-kplugin] ')}`);
    expect([0, 1], r.stderr.slice(-1500)).toContain(r.code);
    expect(r.stderr).toMatch(/probe: http:\/\/10\.96\.0\.10:80\/ \(Service web\)/);
    expect(r.stderr).toMatch(/node lab-node: recording \(pod rolltrace-[0-9a-f]{6}-0\)/);
    expect(r.stderr).toMatch(/rollout: \d+ of 2 updated replicas/);
    expect(r.stderr).toMatch(/node lab-node: bundle \d+\.\d MiB -> web\.rtb/);
    expect(r.stdout).toMatch(/^VERDICT: /);
    expect(podsLeft()).toBe('');
    expect(sessionFilesLeft()).toEqual([]);
    const { a, code } = await analyze(out);
    expect(r.code).toBe(code);
    expect(a.bundle.sources.filter((s) => ['packets', 'ebpf', 'nftables', 'conntrack', 'kube', 'probe'].includes(s.name)).map((s) => `${s.name}=${s.status}`).sort())
      .toEqual(['conntrack=ok', 'ebpf=ok', 'kube=ok', 'nftables=ok', 'packets=ok', 'probe=ok']);
    expect(a.pods.filter((p) => p.sigtermAt)).toHaveLength(2);
    const problems = checkAgainstTruth(out, a);
    console.log(`[e2e-kplugin] ${a.failures.length} failure(s): ${a.failures.map((f) => `${f.cause} ${f.backend.pod}`).join(', ')}; verdicts ${a.pods.map((p) => p.verdict).join(', ')}`);
    expect(problems).toEqual([]);
    kept--;
  }, 240_000);

  it('the walls are one line with exit 2, and leave no pod: image absent, no such node, PodSecurity, RBAC', async () => {
    // a registry that refuses at once (inside the node's own network namespace)
    const img = await plugin(['record', 'deploy/web', '--restart', '--image', 'localhost:1/rolltrace:absent', '--out', join(dir, 'x.rtb')]);
    expect(img.code).toBe(2);
    expect(oneLine(img)).toHaveLength(1);
    expect(oneLine(img)[0]).toMatch(/^kubectl rolltrace: image localhost:1\/rolltrace:absent is not on node lab-node \((ErrImagePull|ImagePullBackOff): /);
    expect(podsLeft()).toBe('');

    const nn = await plugin(['record', 'deploy/web', '--nodes', 'no-such-node', '--out', join(dir, 'x.rtb')]);
    expect(nn.code).toBe(2);
    expect(oneLine(nn)).toEqual(['kubectl rolltrace: --nodes: node no-such-node does not exist (kubectl get nodes)']);

    kubectl('create', 'namespace', 'rt-baseline');
    kubectl('label', 'namespace', 'rt-baseline', 'pod-security.kubernetes.io/enforce=baseline');
    for (let i = 0; i < 40 && kubectl('get', 'serviceaccount', 'default', '-n', 'rt-baseline').status !== 0; i++) await new Promise((res) => setTimeout(res, 250));
    const ps = await plugin(['record', 'deploy/web', '--restart', '--recorder-namespace', 'rt-baseline', '--service-account', 'default', '--out', join(dir, 'x.rtb')]);
    expect(ps.code).toBe(2);
    expect(oneLine(ps)).toEqual([expect.stringMatching(/^kubectl rolltrace: PodSecurity refuses the privileged recorder pod in namespace rt-baseline \(level baseline:latest forbids its host namespaces, hostPath volumes, privileged\)/)]);

    kubectl('create', 'serviceaccount', 'nobody', '-n', 'default');
    const token = kubectl('create', 'token', 'nobody', '-n', 'default').stdout.trim();
    const kc = join(dir, 'nobody.kubeconfig');
    writeFileSync(kc, kubectl('config', 'view', '--raw', '--minify').stdout);
    spawnSync(k8sBin('kubectl'), ['--kubeconfig', kc, 'config', 'set-credentials', 'nobody', `--token=${token}`]);
    spawnSync(k8sBin('kubectl'), ['--kubeconfig', kc, 'config', 'set-context', '--current', '--user=nobody']);
    const rb = await plugin(['record', 'deploy/web', '--restart', '--out', join(dir, 'x.rtb')], 60_000, undefined, kc);
    expect(rb.code).toBe(2);
    expect(oneLine(rb)).toEqual([expect.stringMatching(/^kubectl rolltrace: RBAC: you cannot get deployments\.apps, list pods, patch deployments\.apps, list services in namespace default; create pods, get pods, delete pods, get pods\/log, create pods\/exec in namespace rolltrace \(`kubectl auth can-i get deployments\.apps -n default` says no\)/)]);
    expect(podsLeft()).toBe('');
    expect(existsSync(join(dir, 'x.rtb'))).toBe(false);
  }, 180_000);

  it('Ctrl-C while the recorder pod starts: its pod is removed, exit 130', async () => {
    let sent = false;
    const r = await plugin(['record', 'deploy/web', '--restart', '--out', join(dir, 'int.rtb')], 120_000, (s, kill) => {
      if (!sent && /recorder pod \S+ created/.test(s)) { sent = true; kill('SIGINT'); }
    });
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toMatch(/interrupted: recorder pods removed/);
    expect(podsLeft()).toBe('');
    // the Deployment was not restarted
    expect(r.stderr).not.toMatch(/restarted/);
  }, 150_000);

  it('Ctrl-C while recording: the recorders stop, what they recorded is collected and analyzed, no pod left', async () => {
    let sent = false;
    const out = join(dir, 'early.rtb');
    const r = await plugin(['record', 'deploy/web', '--out', out], 120_000, (s, kill) => {
      if (!sent && /waiting for a rollout of deploy\/web/.test(s)) { sent = true; setTimeout(() => kill('SIGINT'), 2000); }
    });
    expect(r.stderr).toMatch(/Ctrl-C: stopping the recorders and collecting what they recorded/);
    expect(r.stderr).toMatch(/node lab-node: bundle \d+\.\d MiB -> early\.rtb/);
    expect(r.stdout).toMatch(/^VERDICT: /);
    const { a, code } = await analyze(out);
    expect(r.code).toBe(code);
    expect(a.bundle.sources.find((x) => x.name === 'probe')?.status).toBe('ok');
    expect(podsLeft()).toBe('');
    expect(sessionFilesLeft()).toEqual([]);
  }, 150_000);

  it('deploy/daemonset.yaml records a rollout of web; kubectl rolltrace collect brings the bundle out', async () => {
    const ds = readFileSync(join(ROOT, 'deploy/daemonset.yaml'), 'utf8').replaceAll('value: shop', 'value: default');
    expect(kubectlIn(ds, 'apply', '-f', '-').status).toBe(0);
    let log = '';
    for (let i = 0; i < 120 && !/^recording/m.test(log); i++) {
      await new Promise((res) => setTimeout(res, 500));
      log = kubectl('-n', 'rolltrace', 'logs', 'ds/rolltrace').stdout;
    }
    expect(log).toMatch(/^recording for 600 s/m);
    expect(kubectl('rollout', 'restart', 'deploy/web').status).toBe(0);
    expect(kubectl('rollout', 'status', 'deploy/web', '--timeout=120s').status).toBe(0);
    await new Promise((res) => setTimeout(res, 3000));
    // SIGTERM: the recorder closes its bundle on the node
    expect(kubectl('-n', 'rolltrace', 'delete', 'ds', 'rolltrace').status).toBe(0);
    expect(kubectl('-n', 'rolltrace', 'wait', '--for=delete', 'pod', '-l', 'app.kubernetes.io/name=rolltrace', '--timeout=60s').status).toBe(0);
    const out = join(dir, 'ds.rtb');
    kept++;
    const c = await plugin(['collect', '--out', out, '--delete']);
    console.log(`[e2e-kplugin ds] ${c.stderr.trim().split('\n').join('\n[e2e-kplugin ds] ')}`);
    expect([0, 1], c.stderr).toContain(c.code);
    expect(c.stderr).toMatch(/node lab-node: \/var\/lib\/rolltrace\/lab-node-\d{8}T\d{6}Z\.rtb \(\d+\.\d MiB\)/);
    expect(c.stdout).toMatch(/^VERDICT: /);
    expect(podsLeft()).toBe('');
    expect(readdirSync(NODE_DIR).filter((f) => !before.has(f) && /^lab-node-/.test(f))).toEqual([]);
    const { a, code } = await analyze(out);
    expect(c.code).toBe(code);
    expect(a.bundle.node).toBe('lab-node');
    const terminated = a.pods.filter((p) => p.sigtermAt);
    expect(terminated).toHaveLength(2);
    expect(terminated.every((p) => p.listenerClosedAt && p.ruleRemovedAt)).toBe(true);
    expect(checkAgainstTruth(out, a).filter((p) => !p.startsWith('only '))).toEqual([]);
    kept--;
  }, 240_000);

  it('deploy/job.yaml records one rollout it restarts itself; kubectl cp brings the bundle out', async () => {
    const job = readFileSync(join(ROOT, 'deploy/job.yaml'), 'utf8').replaceAll('NODE_NAME_HERE', 'lab-node').replaceAll('value: shop', 'value: default');
    expect(kubectlIn(job, 'apply', '-f', '-').status).toBe(0);
    let log = '';
    for (const t0 = Date.now(); Date.now() - t0 < 150_000 && !/bundle ready/.test(log);) {
      await new Promise((res) => setTimeout(res, 500));
      log = kubectl('-n', 'rolltrace', 'logs', 'job/rolltrace-record').stdout;
    }
    if (!/bundle ready/.test(log)) console.log(`[e2e-kplugin job] ${log}\n${kubectl('-n', 'rolltrace', 'describe', 'pod', '-l', 'job-name=rolltrace-record').stdout}\n${kubectl('get', 'pods', '-o', 'wide').stdout}`);
    expect(log).toMatch(/rolltrace: bundle ready: \/var\/lib\/rolltrace\/rollout\.rtb on lab-node \(record exit 0\)/);
    expect(log).toMatch(/stopped by rollout complete/);
    const pod = kubectl('-n', 'rolltrace', 'get', 'pod', '-l', 'job-name=rolltrace-record', '-o', 'jsonpath={.items[0].metadata.name}').stdout.trim();
    const out = join(dir, 'job.rtb');
    const cp = kubectl('-n', 'rolltrace', 'cp', `${pod}:/var/lib/rolltrace/rollout.rtb`, out);
    expect(cp.status, cp.stderr).toBe(0);
    expect(kubectl('-n', 'rolltrace', 'delete', 'job', 'rolltrace-record', '--wait=true').status).toBe(0);
    expect(kubectl('-n', 'rolltrace', 'wait', '--for=delete', 'pod', '-l', 'job-name=rolltrace-record', '--timeout=60s').status).toBe(0);
    expect(podsLeft()).toBe('');
    const { a } = await analyze(out);
    expect(a.pods.filter((p) => p.sigtermAt)).toHaveLength(2);
    expect(checkAgainstTruth(out, a).filter((p) => !p.startsWith('only '))).toEqual([]);
  }, 240_000);
});

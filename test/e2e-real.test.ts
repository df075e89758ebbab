/**
 * Issue 9 acceptance on the real node (real kube-apiserver/etcd/controller-manager/scheduler, kubelet,
 * containerd/runc, kube-proxy): `lab up --real` gives a Ready node kubectl can roll, `lab down` leaves
 * nothing (also after a SIGKILLed run), and each scenario recorded by the real recorder agrees with the
 * truth read from the components' own records, every scenario in both kube-proxy modes (~25 s each, the
 * file ~7 min with the binaries cached). Part of `npm test`; alone with `npm run test:real` (root; the first
 * run on a machine builds Kubernetes, ~7 min on 2 cores). ROLLTRACE_REAL_SCENARIOS / ROLLTRACE_REAL_MODES pick
 * a subset; ROLLTRACE_REAL_KEEP=1 keeps every bundle and truth.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Analysis } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { buildKubernetes, k8sBin, K8S_VERSION } from '../lab/real/build.js';
import { KUBELET_SYSCTLS, parseProxyMode, PROXY_MODES } from '../lab/real/config.js';
import { cleanupRealLab, realLeftovers } from '../lab/real/state.js';
import { BIN, ROOT } from './helpers/cli.js';
import { compareWithTruth, EXPECT, RULE_RECEIPT_SLACK_NS, type Expectation } from './e2e-truth.js';
import { realClaims } from './real-claims.js';

const dir = mkdtempSync(join(tmpdir(), 'e2e-real-'));
let kept = 0;
const prefixes = new Set<string>();
afterAll(() => {
  for (const p of prefixes) cleanupRealLab(p);
  // ROLLTRACE_REAL_KEEP=1 keeps every run's bundle and truth (evidence), not only the failing ones'
  if (!kept && !process.env.ROLLTRACE_REAL_KEEP) rmSync(dir, { recursive: true, force: true }); else console.log(`[e2e-real] bundles and truth kept in ${dir}`);
});

function cli(args: string[], timeoutMs: number, onStdout?: (s: string, kill: () => void) => void): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d: Buffer) => { stdout += d; onStdout?.(stdout, () => p.kill('SIGKILL')); });
    p.stderr.on('data', (d: Buffer) => { stderr += d; });
    const timer = setTimeout(() => p.kill('SIGINT'), timeoutMs);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? -1, stdout, stderr }); });
  });
}
const sysctls = () => Object.fromEntries(KUBELET_SYSCTLS.map((k) => [k, readFileSync(`/proc/sys/${k}`, 'utf8').trim()]));
const prefixOf = (out: string) => /"prefix":"(rtr[0-9a-f]{6})"/.exec(out)?.[1] ?? /node (rtr[0-9a-f]{6})/.exec(out)?.[1] ?? null;

beforeAll(async () => {
  await buildKubernetes({ say: (s) => console.log(`[build] ${s}`) });
}, 40 * 60_000);

describe.sequential('the real node', () => {
  it('lab up --real: a Ready v1.33 node on containerd, Deployment web rolls; lab down leaves nothing', async () => {
    const before = sysctls();
    const up = await cli(['lab', 'up', '--real'], 240_000);
    const prefix = prefixOf(up.stdout);
    if (prefix) prefixes.add(prefix);
    expect(up.code, up.stderr.slice(-1500)).toBe(0);
    const kc = /^KUBECONFIG=(\S+)$/m.exec(up.stdout)?.[1];
    expect(kc).toBeDefined();
    const kubectl = (...a: string[]) => spawnSync(k8sBin('kubectl'), a, { encoding: 'utf8', env: { ...process.env, KUBECONFIG: kc! }, timeout: 120_000 });
    const nodes = kubectl('get', 'nodes', '-o', 'wide');
    expect(nodes.stdout).toMatch(new RegExp(`lab-node\\s+Ready\\s+\\S+\\s+\\S+\\s+${K8S_VERSION.replace(/\./g, '\\.')}`));
    expect(nodes.stdout).toMatch(/containerd:\/\/1\.7\.\d+/);
    expect(kubectl('get', 'deploy', 'web', '-o', 'jsonpath={.status.readyReplicas}').stdout).toBe('2');
    expect(kubectl('rollout', 'restart', 'deploy/web').status).toBe(0);
    const st = kubectl('rollout', 'status', 'deploy/web', '--timeout=90s');
    expect(st.status, st.stderr).toBe(0);
    expect(st.stdout).toContain('successfully rolled out');
    expect(realLeftovers(prefix!).length).toBeGreaterThan(0);
    const r = cleanupRealLab(prefix!);
    expect(r.netns).toHaveLength(2);
    expect(realLeftovers(prefix!)).toEqual([]);
    expect(sysctls()).toEqual(before);
  }, 360_000);

  it('a SIGKILLed lab run --real is removed completely by the cleanup', async () => {
    const out = join(dir, 'killed.rtb');
    let prefix: string | null = null;
    await cli(['lab', 'run', '--real', '--scenario', 'race', '--out', out], 240_000, (s, kill) => {
      prefix = prefixOf(s);
      if (s.includes('"kind":"recorder"')) kill();
    });
    expect(prefix).not.toBeNull();
    prefixes.add(prefix!);
    expect(realLeftovers(prefix!).some((x) => x.startsWith('process'))).toBe(true);
    cleanupRealLab(prefix!);
    expect(realLeftovers(prefix!)).toEqual([]);
  }, 300_000);
});

/**
 * real-node variants besides the shared scenarios. The race's verdict is judged per pod from the truth
 * (truthVerdicts): on a real node a kube-proxy sync can land between SIGTERM and the close, and then the
 * pod was safe; the fast lab's fixed expectation does not hold there.
 */
const REAL_EXPECT: Record<string, Expectation> = {
  ...EXPECT,
  race: { ...EXPECT.race!, verdict: null },
  iptables: { ...EXPECT.iptables!, verdict: null },
  'prestop-exec': EXPECT.prestop!,
  'prestop-sleep-action': EXPECT.prestop!,
  // the app neither closes nor exits between SIGTERM and the SIGKILL at the end of its 3 s grace period;
  // the rules dropped it long before, nothing was in flight at the kill
  'ignore-sigterm': { failures: 'none', cause: null, verdict: 'ignored-sigterm' },
  // one replica on one node: the terminating endpoint keeps serving, and with no other endpoint ready
  // kube-proxy keeps it on every path (cluster IP and the Local NodePort) until the replacement is ready
  // (ProxyTerminatingEndpoints; realClaims checks both paths and the fallback): nothing fails
  'local-policy': { failures: 'none', cause: null, verdict: 'safe' },
};

/** each terminated pod's verdict against the truth's own order of listener close and rule removal */
function truthVerdicts(a: Analysis, t: Truth): string[] {
  const out: string[] = [];
  for (const tp of t.pods) {
    if (tp.listenerClosedNs === null || !tp.ruleRemoved) continue;
    const ap = a.pods.find((p) => p.namespace === tp.namespace && p.name === tp.name);
    const want = tp.listenerClosedNs < tp.ruleRemoved.syncStartNs ? 'listener-closed-before-rule-removed'
      : tp.listenerClosedNs > tp.ruleRemoved.syncEndNs + RULE_RECEIPT_SLACK_NS ? 'safe' : null;
    if (want && ap?.verdict !== want) out.push(`pod ${tp.name}: verdict ${ap?.verdict}, the truth says ${want}`);
  }
  return out;
}

/**
 * Every real scenario in both kube-proxy modes. ROLLTRACE_REAL_SCENARIOS=a,b picks scenarios and
 * ROLLTRACE_REAL_MODES=nftables|iptables|nftables,iptables picks modes; `iptables` (the race in iptables
 * mode) runs in its own mode only.
 */
const ALL_REAL = ['race', 'prestop-exec', 'prestop-sleep-action', 'ignore-sigterm', 'grace-too-short', 'not-ready', 'local-policy', 'local-blackhole'];
const SCENARIOS = process.env.ROLLTRACE_REAL_SCENARIOS ? process.env.ROLLTRACE_REAL_SCENARIOS.split(',') : ALL_REAL;
const MODES = (process.env.ROLLTRACE_REAL_MODES ?? PROXY_MODES.join(',')).split(',').map((m) => parseProxyMode(m)!);
const RUNS = SCENARIOS.flatMap((s) => (s === 'iptables' ? MODES.filter((m) => m === 'iptables') : MODES).map((mode) => ({ s, mode })));

describe.sequential('scenarios on the real node: analysis vs truth', () => {
  for (const { s, mode } of RUNS) {
    it(`${s} (${mode})`, async () => {
      const out = join(dir, `${s}-${mode}.rtb`), truthPath = join(dir, `${s}-${mode}.truth.json`);
      kept++;
      const lab = await cli(['lab', 'run', '--real', '--scenario', s, '--proxy-mode', mode, '--out', out, '--truth', truthPath], 300_000);
      const prefix = prefixOf(lab.stdout);
      if (prefix) prefixes.add(prefix);
      expect(lab.code, `lab run --real ${s} --proxy-mode ${mode}: ${lab.stdout.slice(-800)} ${lab.stderr.slice(-800)}`).toBe(0);
      expect(realLeftovers(prefix!)).toEqual([]);
      const truth = JSON.parse(readFileSync(truthPath, 'utf8')) as Truth;
      expect(truth.recorder.exitCode).toBe(0);
      expect(truth.mode).toBe(mode);
      expect(truth.syncs.length).toBeGreaterThan(0);
      expect(truth.syncs.every((x) => x.mode === mode)).toBe(true);
      expect(truth.pods.length).toBeGreaterThan(0);
      const an = await cli(['analyze', out, '--format', 'json'], 120_000);
      const a = JSON.parse(an.stdout) as Analysis;
      const { problems, summary } = compareWithTruth(a, truth, REAL_EXPECT[s]!);
      console.log(`[e2e-real ${s} ${mode}] ${summary.join('; ')}`);
      expect([...problems, ...truthVerdicts(a, truth), ...realClaims(a, truth)]).toEqual([]);
      kept--;
    }, 420_000);
  }
});

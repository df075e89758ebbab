/**
 * The verification loop on the real node (root; real kube-apiserver v1.33.13, kubelet, containerd,
 * kube-proxy): record a scenario that fails, check that the recommendation carries what the real API
 * server reported (current values, server version → the native `sleep` preStop) and a preStop longer
 * than the propagation the components' own records show, run the printed `kubectl patch` line in a
 * server-side dry run against that node, apply the printed patch with `lab run --real --patch`, record
 * again: `rolltrace analyze` exits 0 and the truth (lab/real/truth.ts) has no failure. grace-too-short's
 * drain is cut by SIGKILL, so one recording gives only a lower bound of it: its loop is followed until
 * the analysis' grace check passes and the truth has no SIGKILLed pod. Run alone (timing-sensitive).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Analysis } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { buildKubernetes, k8sBin, K8S_VERSION } from '../lab/real/build.js';
import { cleanupRealLab, realLeftovers } from '../lab/real/state.js';
import { cliAsync } from './helpers/cli.js';
import { compareWithTruth } from './e2e-truth.js';

const dir = mkdtempSync(join(tmpdir(), 'e2e-real-fix-'));
const prefixes = new Set<string>();
let kept = 0;
afterAll(() => {
  for (const p of prefixes) cleanupRealLab(p);
  if (!kept) rmSync(dir, { recursive: true, force: true }); else console.log(`[e2e-real-fix-loop] bundles and truth of the failing loop kept in ${dir}`);
});
beforeAll(async () => { await buildKubernetes({ say: (s) => console.log(`[build] ${s}`) }); }, 40 * 60_000);

const labLines = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('LAB ')).map((l) => JSON.parse(l.slice(4)) as Record<string, any>);

async function labRun(scenario: string, out: string, extra: string[] = []): Promise<{ prefix: string; truth: Truth; lines: Array<Record<string, any>> }> {
  const truthPath = `${out}.truth.json`;
  const r = await cliAsync(['lab', 'run', '--real', '--scenario', scenario, '--out', out, '--truth', truthPath, ...extra], 300_000);
  const lines = labLines(r.stdout);
  const prefix = lines.find((l) => l.kind === 'starting')?.prefix as string;
  if (prefix) prefixes.add(prefix);
  expect(r.code, `lab run --real ${scenario} ${extra.join(' ')}: ${r.stdout.slice(-600)} ${r.stderr.slice(-600)}`).toBe(0);
  return { prefix, truth: JSON.parse(readFileSync(truthPath, 'utf8')) as Truth, lines };
}

async function analyze(file: string): Promise<{ code: number; a: Analysis }> {
  const r = await cliAsync(['analyze', file, '--format', 'json'], 120_000);
  return { code: r.code, a: JSON.parse(r.stdout) as Analysis };
}

/** The real kubectl against a kept lab's API server (its host kubeconfig), like a user with KUBECONFIG set. */
function shWithKubeconfig(kubeconfig: string, line: string) {
  return spawnSync('sh', ['-c', line], { encoding: 'utf8', timeout: 60_000,
    env: { ...process.env, KUBECONFIG: kubeconfig, PATH: `${dirname(k8sBin('kubectl'))}:${process.env.PATH}` } });
}

/** deletion → the end of the kube-proxy sync that stopped routing to the pod, per the components' own records */
const truthPropagationsMs = (t: Truth) => t.pods.filter((p) => p.ruleRemoved && p.deletionSeenNs !== null).map((p) => (p.ruleRemoved!.syncEndNs - p.deletionSeenNs!) / 1e6);

/**
 * The first, failing recording on a kept node: the recommendation against what that node's API server
 * says, and the printed kubectl line in a server-side dry run. Returns the patch file.
 */
async function failingRun(scenario: string): Promise<{ patchFile: string; a: Analysis; truth: Truth }> {
  const out = join(dir, `${scenario}.rtb`);
  const { prefix, truth, lines } = await labRun(scenario, out, ['--keep']);
  try {
    const kubeconfig = lines.find((l) => l.kind === 'kept')?.kubeconfig as string;
    expect(kubeconfig).toBeTruthy();
    const { code, a } = await analyze(out);
    expect(code).toBe(1);
    expect(truth.failures.length, 'the truth agrees the first rollout failed').toBeGreaterThan(0);
    const r = a.recommendation;
    // current: what the real API server reports for the Deployment and its version
    const dep = JSON.parse(shWithKubeconfig(kubeconfig, 'kubectl get deployment web -n default -o json').stdout);
    const version = JSON.parse(shWithKubeconfig(kubeconfig, 'kubectl version -o json').stdout).serverVersion.gitVersion;
    expect(version).toBe(K8S_VERSION);
    const tmpl = dep.spec.template.spec;
    expect(r.current).toMatchObject({
      deployment: 'default/web', from: 'deployment', replicas: dep.spec.replicas, containers: tmpl.containers.map((c: any) => c.name),
      terminationGracePeriodSeconds: tmpl.terminationGracePeriodSeconds, preStop: null, preStopSeconds: null, serverVersion: version,
      readinessProbe: !!tmpl.containers[0].readinessProbe,
      strategy: { type: dep.spec.strategy.type, maxSurge: dep.spec.strategy.rollingUpdate.maxSurge, maxUnavailable: dep.spec.strategy.rollingUpdate.maxUnavailable,
        minReadySeconds: dep.spec.minReadySeconds ?? 0 },
    });
    // the patch: the native sleep (v1.33 has it), longer than every propagation the truth saw
    const props = truthPropagationsMs(truth);
    expect(props.length).toBeGreaterThan(0);
    expect(r.preStopSeconds! * 1000).toBeGreaterThan(Math.max(...props));
    const c0 = (r.patch as any).spec.template.spec.containers[0];
    expect(c0.name).toBe('app');
    expect(c0.lifecycle).toEqual({ preStop: { sleep: { seconds: r.preStopSeconds } } });
    expect(r.kubectl).toBe(`kubectl patch deployment web -n default --type strategic -p '${JSON.stringify(r.patch)}'`);
    expect(r.checks!.map((c) => c.knob)).toEqual(['preStop', 'grace', 'pdb', 'strategy', 'probes', 'trafficPolicy']);
    expect(r.verify![0]).toMatch(new RegExp(`^rolltrace record --out ${scenario}-fixed\\.rtb .*--deployment web --restart .*--until-rollout-complete`));
    expect(r.verify![1]).toBe(`rolltrace analyze ${scenario}-fixed.rtb`);
    // the printed line, as printed, against that node's API server
    const dry = shWithKubeconfig(kubeconfig, `${r.kubectl} --dry-run=server -o json`);
    expect(dry.status, dry.stderr).toBe(0);
    const served = JSON.parse(dry.stdout).spec.template.spec;
    expect(served.containers[0].lifecycle.preStop).toEqual({ sleep: { seconds: r.preStopSeconds } });
    if (r.terminationGracePeriodSeconds !== null) expect(served.terminationGracePeriodSeconds).toBe(r.terminationGracePeriodSeconds);
    const patchFile = join(dir, `${scenario}.patch.json`);
    writeFileSync(patchFile, JSON.stringify(r.patch));
    return { patchFile, a, truth };
  } finally {
    cleanupRealLab(prefix);
    expect(realLeftovers(prefix)).toEqual([]);
  }
}

/** Apply a patch on a fresh node, record again: exit 0, no failure in the analysis nor in the truth. */
async function fixedRun(scenario: string, out: string, patchFile: string): Promise<{ a: Analysis; truth: Truth }> {
  const { prefix, truth, lines } = await labRun(scenario, out, ['--patch', patchFile]);
  expect(realLeftovers(prefix)).toEqual([]);
  expect(lines.some((l) => l.kind === 'patched')).toBe(true);
  expect(lines.some((l) => l.kind === 'patch-rolled-out')).toBe(true);
  const { code, a } = await analyze(out);
  // (the stamps' precision against the truth is test/e2e-real.test.ts's: here, the failures and the pods)
  const { summary } = compareWithTruth(a, truth, { failures: 'none', cause: null, verdict: null });
  console.log(`[e2e-real-fix-loop ${scenario}] ${summary.join('; ')}`);
  expect(a.failures.map((f) => `${f.cause} ${f.client} -> ${f.backend.pod}`)).toEqual([]);
  expect(truth.failures).toEqual([]);
  expect(truth.pods.length, 'the recorded rollout terminated pods').toBeGreaterThan(0);
  expect(a.pods.map((p) => p.name).sort()).toEqual(expect.arrayContaining(truth.pods.map((p) => p.name).sort()));
  expect(code).toBe(0);
  return { a, truth };
}

describe.sequential('the fix loop on the real node', () => {
  it('lab run --real --patch: bad JSON, and a patch the API server rejects, are one-line errors (exit 2) that leave nothing', async () => {
    const bad = await cliAsync(['lab', 'run', '--real', '--scenario', 'race', '--out', join(dir, 'bad.rtb'), '--patch', '{"spec":'], 30_000);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^rolltrace: --patch: not JSON/)]);
    const rej = await cliAsync(['lab', 'run', '--real', '--scenario', 'race', '--out', join(dir, 'rejected.rtb'), '--patch', '{"spec":{"replicas":"two"}}'], 240_000);
    const prefix = labLines(rej.stdout).find((l) => l.kind === 'starting')?.prefix as string;
    if (prefix) prefixes.add(prefix);
    expect(rej.code).toBe(2);
    expect(rej.stderr.split('\n').filter((l) => l.startsWith('rolltrace:'))).toEqual([expect.stringMatching(/^rolltrace: --patch: the API server rejected it: .*replicas/)]);
    expect(rej.stderr).not.toMatch(/\n\s+at /);
    expect(realLeftovers(prefix)).toEqual([]);
  }, 300_000);

  it('race: the printed native-sleep preStop, applied with kubectl on the real node, rolls without a failure', async () => {
    kept++;
    const first = await failingRun('race');
    expect(first.a.recommendation.checks!.find((c) => c.knob === 'preStop')!.status).toBe('fail');
    const { a, truth } = await fixedRun('race', join(dir, 'race-fixed.rtb'), first.patchFile);
    expect(a.recommendation.current?.preStop).toBe(`sleep ${first.a.recommendation.preStopSeconds}s`);
    // every terminated pod kept listening until the real kube-proxy stopped routing to it
    for (const p of truth.pods) expect(p.listenerClosedNs! > p.ruleRemoved!.syncEndNs, `${p.name}: closed after the rule was gone`).toBe(true);
    expect(a.recommendation.checks!.find((c) => c.knob === 'preStop')!.status).toBe('ok');
    console.log(`[e2e-real-fix-loop race] propagation ${truthPropagationsMs(first.truth).map((x) => x.toFixed(0)).join(', ')} ms → preStop ${first.a.recommendation.preStopSeconds} s; after: ${truthPropagationsMs(truth).map((x) => x.toFixed(0)).join(', ')} ms, 0 failures`);
    kept--;
  }, 600_000);

  it('grace-too-short: the printed patches raise the grace period until no pod is SIGKILLed, each recording exits 0', async () => {
    kept++;
    const first = await failingRun('grace-too-short');
    const r1 = first.a.recommendation;
    expect(r1.current!.terminationGracePeriodSeconds).toBe(2);
    expect(r1.checks!.find((c) => c.knob === 'grace')!.status).toBe('fail');
    expect(r1.terminationGracePeriodSeconds!).toBeGreaterThan(2);
    expect(first.truth.failures.every((f) => f.kind === 'closed-at-kill' || f.kind === 'reset-at-close')).toBe(true);
    // a drain cut by SIGKILL is only a lower bound: follow the loop (at most two patches) until the truth
    // has no SIGKILLed pod and the analysis' grace check agrees
    let patchFile = first.patchFile;
    const graces = [2, r1.terminationGracePeriodSeconds!];
    for (let i = 1; ; i++) {
      const { a, truth } = await fixedRun('grace-too-short', join(dir, `grace-too-short-fixed${i}.rtb`), patchFile);
      expect(a.recommendation.current!.terminationGracePeriodSeconds).toBe(graces[i]);
      const grace = a.recommendation.checks!.find((c) => c.knob === 'grace')!;
      const killed = truth.pods.filter((p) => p.killed);
      console.log(`[e2e-real-fix-loop grace-too-short] grace ${graces[i]} s: propagation ${truthPropagationsMs(truth).map((x) => x.toFixed(0)).join(', ')} ms, ${killed.length} pod(s) SIGKILLed per the truth, grace check ${grace.status}, next grace ${a.recommendation.terminationGracePeriodSeconds}`);
      if (!killed.length) { expect(grace.status).toBe('ok'); break; }
      expect(grace.status).toBe('fail');
      expect(i, 'converged within two patches').toBeLessThan(2);
      expect(a.recommendation.terminationGracePeriodSeconds!).toBeGreaterThan(graces[i]!);
      graces.push(a.recommendation.terminationGracePeriodSeconds!);
      patchFile = join(dir, `grace-too-short.patch${i + 1}.json`);
      writeFileSync(patchFile, JSON.stringify(a.recommendation.patch));
    }
    kept--;
  }, 900_000);

  // the other failing scenarios (each passed by hand on the real node): ROLLTRACE_REAL_FIX_SCENARIOS=not-ready,local-blackhole,iptables
  for (const s of (process.env.ROLLTRACE_REAL_FIX_SCENARIOS ?? '').split(',').filter(Boolean)) {
    it(`${s}: the printed patch, applied with kubectl on the real node, rolls without a failure`, async () => {
      kept++;
      const first = await failingRun(s);
      await fixedRun(s, join(dir, `${s}-fixed.rtb`), first.patchFile);
      kept--;
    }, 600_000);
  }
});

/**
 * Issue 15 on the real node: two nodes. Node 2 is a netns running a second real kube-proxy (lab-node2, its
 * own config and minSyncPeriod) against the same real API server; a client pod there sends to the Service
 * every 50 ms and node 2's kube-proxy DNATs it to node 1's pods. Both nodes are recorded by the real
 * recorder, merged in both orders and analyzed; checked against the truth from the components' own records
 * (both kube-proxies' logs, node 1's and node 2's conntrack, the remote client's own log). The run is kept
 * up (`--keep`) so that the test can see node 2's namespaces and processes, then removes the lab with
 * `cleanupRealLab` from its resources file alone (as after a SIGKILL) and asserts nothing is left.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Analysis } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { buildKubernetes } from '../lab/real/build.js';
import { cleanupRealLab, realLeftovers } from '../lab/real/state.js';
import { cliAsync as cli } from './helpers/cli.js';
import { mergedBothOrders } from './e2e-truth.js';

const dir = mkdtempSync(join(tmpdir(), 'e2e-real-two-node-'));
let keep = false;
let prefix: string | null = null;
afterAll(() => {
  if (prefix) cleanupRealLab(prefix);
  if (!keep) rmSync(dir, { recursive: true, force: true }); else console.log(`[e2e-real two-node] bundles and truth kept in ${dir}`);
});
beforeAll(async () => { await buildKubernetes({ say: (s) => console.log(`[build] ${s}`) }); }, 40 * 60_000);

const REMOTE_CLIENT = '10.244.1.2';
/** ISO with µs -> epoch ns */
const atNs = (iso: string) => Date.parse(iso) * 1e6 + Number(iso.slice(23, 26)) * 1e3;

describe('the real node with a second node: remote clients, both nodes recorded and merged', () => {
  it('merged in either order, the analysis matches the truth; the cleanup removes node 2 too', async () => {
    keep = true;
    const out = join(dir, 'two.rtb'), out2 = join(dir, 'two-node2.rtb'), truthPath = join(dir, 'two.truth.json');
    const lab = await cli(['lab', 'run', '--real', '--scenario', 'two-node', '--out', out, '--truth', truthPath, '--keep'], 300_000);
    prefix = /"prefix":"(rtr[0-9a-f]{6})"/.exec(lab.stdout)?.[1] ?? null;
    expect(prefix).not.toBeNull();
    expect(lab.code, `${lab.stdout.slice(-800)} ${lab.stderr.slice(-1500)}`).toBe(0);
    expect(lab.stdout).toMatch(/"kind":"recorder-done","node":"lab-node2","exitCode":0/);
    expect(existsSync(out2)).toBe(true);

    // node 2 is in the lab's resources: its namespaces and its kube-proxy are there, and the cleanup
    // (from the resources file, as after a SIGKILL) leaves nothing
    const left = realLeftovers(prefix!);
    expect(left).toContain(`netns ${prefix}-node2`);
    expect(left).toContain(`netns ${prefix}-n2cl`);
    expect(left.some((l) => /^process \d+ .*kube-proxy .*kube-proxy-node2\.json/.test(l))).toBe(true);
    cleanupRealLab(prefix!);
    expect(realLeftovers(prefix!)).toEqual([]);

    const truth = JSON.parse(readFileSync(truthPath, 'utf8')) as Truth;
    expect(truth.recorder.exitCode).toBe(0);
    expect(truth.pods.length).toBe(2);
    expect(truth.node2!.syncs.length).toBeGreaterThan(0);
    // every failed flow in node 2's conntrack is one the remote client logged
    expect(truth.node2!.unmatchedConntrack).toBe(0);

    const x = await mergedBothOrders(cli, out, out2, dir);

    // failures: node 1's (its conntrack: the probe through node 1's rules) and the remote client's (its own
    // log, each connection and backend from node 2's conntrack), one by one by client ip:port
    const remoteTruth = truth.failures.filter((f) => f.node === 'lab-node2');
    const localTruth = truth.failures.filter((f) => !f.node);
    expect(remoteTruth.length, 'the remote client saw failures').toBeGreaterThan(0);
    expect(remoteTruth.every((f) => f.from === 'client-log' && f.client.startsWith(`${REMOTE_CLIENT}:`))).toBe(true);
    const podNames = new Set(truth.pods.map((p) => `${p.namespace}/${p.name}`));
    const problems: string[] = [];
    for (const t of [...localTruth, ...remoteTruth]) {
      const f = x.failures.find((g) => g.client === t.client);
      if (!f) { problems.push(`truth failure ${t.client} (${t.kind}, ${t.backendPod}) not found`); continue; }
      if (f.backend.pod !== t.backendPod) problems.push(`${t.client}: backend ${f.backend.pod}, the truth says ${t.backendPod}`);
      if (f.node !== (t.node ?? 'lab-node')) problems.push(`${t.client}: routed by ${f.node}, the truth says ${t.node ?? 'lab-node'}`);
      if (t.node) {
        if (!podNames.has(t.backendPod ?? '')) problems.push(`${t.client}: truth backend ${t.backendPod} is not a terminated pod`);
        if (f.cause !== 'listener-closed') problems.push(`${t.client}: cause ${f.cause}`);
        if (!/DNATed on lab-node2 .*routed by lab-node2's rules/.test(f.evidence.join('\n'))) problems.push(`${t.client}: evidence does not name lab-node2`);
      }
    }
    const known = new Set(truth.failures.map((f) => f.client));
    for (const f of x.failures) if (!known.has(f.client)) problems.push(`analysis failure ${f.client} (${f.cause}, ${f.at}) is not in the truth`);
    expect(problems).toEqual([]);
    expect(x.failures.length).toBe(truth.failures.length);

    // per pod and per node: each node's own rule removal (nft monitor, receipt-stamped) at that node's sync in
    // its kube-proxy's log, the exposure there, the failures routed by it; the pod is routed until the later one
    for (const t of truth.pods) {
      const p = x.pods.find((q) => q.name === t.name)!;
      const ns = p.nodes!.filter((n) => n.recorded);
      expect(ns.map((n) => n.node)).toEqual(['lab-node', 'lab-node2']);
      const t2 = truth.node2!.ruleRemoved[t.uid]!;
      const syncs = [t.ruleRemoved!, t2];
      ns.forEach((n, i) => {
        const s = syncs[i]!;
        // node 2's instants are shifted by the merge's clock offset estimate (ms)
        expect(atNs(n.ruleRemovedAt!), `${t.name} on ${n.node}`).toBeGreaterThanOrEqual(s.syncStartNs - 20e6);
        expect(atNs(n.ruleRemovedAt!) - s.syncEndNs, `${t.name} on ${n.node}`).toBeLessThan(200e6);
        expect(Math.abs(n.exposureMs! - (s.syncEndNs - t.listenerClosedNs!) / 1e6), `${t.name} exposure on ${n.node}`).toBeLessThan(200);
        const routedBy = (f: Truth['failures'][number]) => (f.node ?? 'lab-node') === n.node && f.backendPod === `${t.namespace}/${t.name}`;
        expect(n.failedConnections, `${t.name}: failures routed by ${n.node}`).toBe(truth.failures.filter(routedBy).length);
      });
      expect(p.ruleRemovedAt).toBe(ns.map((n) => n.ruleRemovedAt!).sort().at(-1));
      // node 2 (minSyncPeriod 2 s) routed to the pod after its listener closed: exposed, whatever node 1 did
      if (t.listenerClosedNs! < t2.syncStartNs) expect(p.verdict).toBe('listener-closed-before-rule-removed');
    }

    // node 1 alone: the remote failures are kept, attributed to the pod here, their node unknown
    const one = JSON.parse((await cli(['analyze', out, '--format', 'json'])).stdout) as Analysis;
    const r1 = one.failures.filter((f) => f.client.startsWith(`${REMOTE_CLIENT}:`));
    // (also the SYNs into a torn-down pod's address: node 1 still forwards them to the pod's MAC, its
    // neighbour entry is seconds from expiring, and nothing answers)
    expect(r1.map((f) => f.client).sort()).toEqual(remoteTruth.map((f) => f.client).sort());
    for (const f of r1) { expect(f.node).toBeNull(); expect(f.evidence.join('\n')).toMatch(/remote node unknown/); }
    expect(one.warnings!.join('\n')).toMatch(/already DNATed by other node\(s\) whose rules are not in this bundle/);
    console.log(`[e2e-real two-node] failures: ${localTruth.length} via lab-node, ${remoteTruth.length} via lab-node2; exposure per node: ${
      x.pods.map((p) => `${p.name}: ${p.nodes!.filter((n) => n.recorded).map((n) => `${n.node} ${n.exposureMs} ms`).join(', ')}`).join('; ')}`);
    keep = false;
  }, 420_000);
});

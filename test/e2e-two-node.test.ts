/**
 * Issue 15 on the fast lab: two nodes. A client pod on node 2 sends to the Service; node 2's own
 * kube-proxy-shaped rules (syncing later than node 1's) DNAT it to node 1's pods, so node 1 sees it
 * already DNATed. Both nodes are recorded by the real recorder (node 2's inside its netns), merged in
 * both orders and analyzed; checked against the lab's truth (its own conntrack on node 1 and the remote
 * client's own log).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Analysis } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { cliAsync, ROOT } from './helpers/cli.js';
import { leftovers } from './lab-scenario-helpers.js';
import { mergedBothOrders } from './e2e-truth.js';

const dir = mkdtempSync(join(tmpdir(), 'e2e-two-node-'));
let keep = false;
afterAll(() => { if (!keep) rmSync(dir, { recursive: true, force: true }); else console.log(`[e2e two-node] bundles kept in ${dir}`); });

const cli = cliAsync;

const REMOTE_CLIENT = '10.244.1.2';

describe('two nodes: remote clients, both nodes recorded and merged', () => {
  it('merged in either order, the analysis matches the truth', async () => {
    keep = true;
    const out = join(dir, 'two.rtb');
    const out2 = join(dir, 'two-node2.rtb');
    const truthPath = join(dir, 'two.truth.json');
    const lab = await cli(['lab', 'run', '--scenario', 'two-node', '--out', out, '--truth', truthPath], 150_000);
    const ready = lab.stdout.split('\n').find((l) => l.startsWith('LAB ') && l.includes('"kind":"ready"'));
    const prefix = ready ? String((JSON.parse(ready.slice(4)) as { nodeNs: string }).nodeNs).replace(/-node$/, '') : null;
    expect(lab.code, lab.stderr.slice(-1500)).toBe(0);
    expect(lab.stdout).toMatch(/"kind":"recorder-done","node":"lab-node2","exitCode":0/);
    expect(existsSync(out2)).toBe(true);
    const truth = JSON.parse(readFileSync(truthPath, 'utf8')) as Truth;
    expect(truth.recorder.exitCode).toBe(0);
    expect(leftovers(prefix!, truth)).toEqual([]);

    const x = await mergedBothOrders(cli, out, out2, dir);

    // truth: refused connections through node 1's rules (its conntrack) and the remote client's own errors
    const local = truth.failures.filter((f) => f.from === 'conntrack');
    const remoteTruth = truth.failures.filter((f) => f.from === 'client-log');
    expect(remoteTruth.length, 'the remote client saw failures').toBeGreaterThan(0);
    const remote = x.failures.filter((f) => f.client.startsWith(`${REMOTE_CLIENT}:`));
    expect(remote.length).toBe(remoteTruth.length);
    const podNames = new Set(truth.pods.map((p) => `${p.namespace ?? 'default'}/${p.name}`));
    for (const f of remote) {
      expect(f.node).toBe('lab-node2');
      expect(f.cause).toBe('listener-closed');
      expect(podNames.has(f.backend.pod ?? '')).toBe(true);
      expect(f.evidence.join('\n')).toMatch(/DNATed on lab-node2 .*routed by lab-node2's rules/);
    }
    for (const t of local) {
      const f = x.failures.find((g) => g.client === t.client);
      expect(f, `truth failure ${t.client}`).toBeDefined();
      expect(f!.backend.pod).toBe(t.backendPod);
      expect(f!.node).toBe('lab-node');
    }
    expect(x.failures.length).toBe(local.length + remoteTruth.length);
    // per node: each recorded node's own removal; the pod is routed until the later one
    for (const p of x.pods.filter((q) => q.deletionAt)) {
      const ns = p.nodes!.filter((n) => n.recorded);
      expect(ns.map((n) => n.node)).toEqual(['lab-node', 'lab-node2']);
      const last = ns.map((n) => n.ruleRemovedAt!).sort().at(-1);
      expect(p.ruleRemovedAt).toBe(last);
      const t = truth.pods.find((q) => q.name === p.name)!;
      // each node's removal, as recorded (nft monitor, receipt-stamped), falls at or after that node's own sync in the truth
      const atNs = (iso: string) => Date.parse(iso) * 1e6 + Number(iso.slice(23, 26)) * 1e3;
      const t2 = truth.node2!.ruleRemoved[t.uid]!;
      expect(atNs(ns[0]!.ruleRemovedAt!)).toBeGreaterThanOrEqual(t.ruleRemoved!.syncStartNs);
      expect(atNs(ns[0]!.ruleRemovedAt!) - t.ruleRemoved!.syncEndNs).toBeLessThan(200e6);
      // node 2's instants are shifted by the merge's clock offset estimate (watch delivery differences: ms)
      expect(atNs(ns[1]!.ruleRemovedAt!)).toBeGreaterThanOrEqual(t2.syncStartNs - 20e6);
      expect(atNs(ns[1]!.ruleRemovedAt!) - t2.syncEndNs).toBeLessThan(200e6);
      // and the exposure there: node 2's removal minus the listener close, against the truth's
      expect(Math.abs(ns[1]!.exposureMs! - (t2.syncEndNs - t.listenerClosedNs!) / 1e6)).toBeLessThan(200);
      expect(p.verdict).toBe('listener-closed-before-rule-removed');
    }

    // node 1 alone: the remote failures are kept, attributed to the pod here, their node unknown
    const one = JSON.parse((await cli(['analyze', out, '--format', 'json'])).stdout) as Analysis;
    const r1 = one.failures.filter((f) => f.client.startsWith(`${REMOTE_CLIENT}:`));
    expect(r1.length).toBe(remoteTruth.length);
    for (const f of r1) { expect(f.node).toBeNull(); expect(f.evidence.join('\n')).toMatch(/remote node unknown/); }
    expect(one.warnings!.join('\n')).toMatch(/already DNATed by other node\(s\) whose rules are not in this bundle/);
    keep = false;
  }, 240_000);
});

/**
 * The terminating fallback on every path, as the real kube-proxy (v1.33) does it. With no ready endpoint,
 * kube-proxy routes serving+terminating ones, independently for Cluster and Local traffic
 * (pkg/proxy/topology.go CategorizeEndpoints). On one node with one replica the cluster IP path therefore
 * keeps the terminating pod exactly as long as the Local NodePort does: the analysis used to call a path a
 * fallback only when a Local path outlived the cluster IP path, and said `fallback: false` on both paths
 * while kube-proxy's own transactions rewrote both with the terminating pod in them.
 * Fixtures: bundles and truth of real-node runs (lab run --real), one per proxy mode:
 *  - local-policy, nftables: the endpoint drains 4 s; both paths keep it ~2.7 s, until the replacement is ready;
 *  - local-blackhole, iptables: the app closes at SIGTERM; both paths keep it (still serving) until the
 *    readiness probe fails, and the connections refused meanwhile carry their path; a SYN that fell between
 *    the filter and nat commits of the replacement's first sync is no-endpoint (it was `unknown`).
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import type { Truth } from '../lab/truth.js';
import { compareWithTruth, EXPECT } from './e2e-truth.js';
import { realClaims, truthFallback } from './real-claims.js';

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'lab-real', 'fallback');

async function load(name: string) {
  const truth = JSON.parse(readFileSync(join(FIX, `${name}.truth.json`), 'utf8')) as Truth;
  const r = await BundleReader.open(join(FIX, `${name}.rtb.gz`));
  try { return { truth, a: await analyzeBundle(r) }; } finally { r.close(); }
}

describe('real kube-proxy: the terminating fallback on every path', () => {
  it('local-policy (nftables): both paths keep the draining pod until the replacement is ready, nothing fails', async () => {
    const { truth, a } = await load('local-policy-nftables');
    expect(truth.mode).toBe('nftables');
    expect([...truthFallback(truth).values()]).toEqual([true]);
    // kube-proxy's own transaction swapped the terminating endpoint for the replacement in one sync
    const sync = truth.syncs.find((s) => s.seq === truth.pods[0]!.ruleRemoved!.seq)!;
    expect(sync.added).toEqual(['default/web:http|10.244.0.3:8080']);
    expect(sync.removed).toEqual(['default/web:http|10.244.0.2:8080']);
    const p = a.pods[0]!;
    expect(p.routes!.map((r) => [r.path, r.addr, r.policy, r.fallback])).toEqual([
      ['cluster-ip', '10.96.0.10:80', 'Cluster', true], ['node-port', '*:30080', 'Local', true]]);
    expect(p.evidence.join('\n')).toMatch(/terminating fallback: the cluster-ip path 10\.96\.0\.10:80 \(policy Cluster\) kept routing to this pod 2\d{3}\.\d+ ms after its endpoint turned terminating/);
    expect(realClaims(a, truth)).toEqual([]);
    expect(compareWithTruth(a, truth, { failures: 'none', cause: null, verdict: 'safe' }).problems).toEqual([]);
  });

  it('local-blackhole (iptables): both paths keep the closed pod while it still serves; every failure carries its path', async () => {
    const { truth, a } = await load('local-blackhole-iptables');
    expect(truth.mode).toBe('iptables');
    expect([...truthFallback(truth).values()]).toEqual([true]);
    const p = a.pods[0]!;
    expect(p.routes!.map((r) => [r.path, r.addr, r.fallback])).toEqual([['cluster-ip', '10.96.0.10:80', true], ['node-port', '*:30080', true]]);
    const paths = new Set(a.failures.map((f) => `${f.cause} ${f.path?.path} ${f.path?.addr}`));
    expect(paths).toEqual(new Set(['listener-closed cluster-ip 10.96.0.10:80', 'listener-closed node-port *:30080', 'no-endpoint cluster-ip 10.96.0.10:80', 'no-endpoint node-port *:30080']));
    expect(realClaims(a, truth)).toEqual([]);
    expect(compareWithTruth(a, truth, EXPECT['local-blackhole']!).problems).toEqual([]);
    // the replacement's first sync: iptables-restore commits filter (the REJECT goes) before nat (the DNAT
    // comes); a SYN in between reached no backend and the node answered it itself (the truth: refused, no
    // backend). The analysis once called it `unknown`.
    const gap = a.failures.find((f) => f.client === '192.168.77.2:53472')!;
    expect(truth.failures.find((f) => f.client === '192.168.77.2:53472')).toMatchObject({ kind: 'refused', backendPod: null });
    expect(gap.cause).toBe('no-endpoint');
    expect(gap.evidence.join('\n')).toMatch(/replaced its reject rule for default\/web:http \(no endpoint\) by the first endpoint's DNAT .* between the filter and nat commits/);
  });

  it('a path with another ready endpoint is no fallback: realClaims catches an analysis that says otherwise', async () => {
    const { truth, a } = await load('local-policy-nftables');
    const t2: Truth = { ...truth, slices: truth.slices!.map((s) => ({ ...s, endpoints: [...s.endpoints, { ip: '10.244.9.9', ready: true, serving: true, terminating: false }] })) };
    expect(truthFallback(t2).get('10.244.0.2')).toBe(false);
    expect(realClaims(a, t2).filter((x) => /fallback true/.test(x))).toHaveLength(2);
  });
});

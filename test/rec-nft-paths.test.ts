/**
 * Routing per path (issue 11 part 1) on golden fixtures of the fast lab's kube-proxy rules, captured on
 * this machine in both modes (fixtures/paths/capture.mts): an externalTrafficPolicy: Local NodePort
 * service whose only local endpoint (10.244.0.2) starts terminating while 10.244.1.3 (another node)
 * stays ready. The cluster IP stops routing to the local endpoint at once; the NodePort keeps it
 * (terminating fallback) until it is gone, then drops (Local blackhole).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { reduceIptablesSave } from '../recorder/sources/nftables/iptables.js';
import { reduceNftRuleset } from '../recorder/sources/nftables/nft-json.js';
import { diffPaths, diffReductions, type Reduction, type DiffOptions } from '../recorder/sources/nftables/reduce.js';

const diffAll = (a: Reduction, b: Reduction, o: DiffOptions) => [...diffReductions(a, b, o), ...diffPaths(a, b, o)];

const fx = (f: string) => readFileSync(`fixtures/paths/${f}`, 'utf8');
const A = '10.244.0.2:8080'; // local, terminates
const B = '10.244.1.3:8080'; // on another node, stays ready

/** path -> sorted endpoints */
function byPath(r: Reduction): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const t of r.paths.values()) (out[`${t.path} ${t.addr} ${t.policy}`] ??= []).push(t.endpoint);
  for (const k of Object.keys(out)) out[k]!.sort();
  return out;
}

const modes: Array<[string, (i: number) => Reduction]> = [
  ['nftables', (i) => reduceNftRuleset(fx(`nft-${i}.json`))],
  ['iptables', (i) => reduceIptablesSave(fx(`ipt-${i}.txt`))],
];

describe.each(modes)('%s mode: per-path routing of a Local service', (mode, red) => {
  it('both ready: the cluster IP routes to both, the NodePort (Local) to the local endpoint only', () => {
    expect(byPath(red(1))).toEqual({ 'cluster-ip 10.96.0.10:80 Cluster': [A, B], 'node-port *:30080 Local': [A] });
    expect([...red(1).paths.values()].every((t) => t.service === 'default/web:http' && t.mode === mode)).toBe(true);
  });

  it('local endpoint terminating: the cluster IP stops routing to it, the NodePort keeps it (terminating fallback)', () => {
    expect(byPath(red(2))).toEqual({ 'cluster-ip 10.96.0.10:80 Cluster': [B], 'node-port *:30080 Local': [A] });
    const evs = diffAll(red(1), red(2), { ts_ns: 5, clock: 'receipt' });
    // the any-path events keep their meaning: A is still routed by some path, so nothing is removed
    expect(evs.filter((e) => e.kind === 'endpoint-rule-removed')).toEqual([]);
    const p = evs.filter((e) => e.kind === 'path-rule-removed' || e.kind === 'path-rule-added');
    expect(p).toHaveLength(1);
    expect(p[0]).toMatchObject({ kind: 'path-rule-removed', ts_ns: 5, subject: A, attrs: { service: 'default/web:http', path: 'cluster-ip', addr: '10.96.0.10:80', policy: 'Cluster', endpoint: A, ip: '10.244.0.2', port: 8080, mode, clock: 'receipt' } });
  });

  it('local endpoint gone: the NodePort stops routing to it and drops (the Local blackhole); the cluster IP keeps the remote one', () => {
    expect(byPath(red(3))).toEqual({ 'cluster-ip 10.96.0.10:80 Cluster': [B] });
    const evs = diffAll(red(2), red(3), { ts_ns: 9, clock: 'receipt' });
    expect(evs.filter((e) => e.kind === 'path-rule-removed').map((e) => `${(e.attrs as { path: string }).path} ${(e.attrs as { addr: string }).addr} ${e.subject}`)).toEqual([`node-port *:30080 ${A}`]);
    expect(evs.filter((e) => e.kind === 'endpoint-rule-removed').map((e) => e.subject)).toEqual([A]);
    const drop = evs.find((e) => e.kind === 'no-endpoint-rule-added')!;
    expect(drop.attrs).toMatchObject({ action: 'drop', node_port: 30080 });
  });
});

describe('kube-proxy\'s own layout (nftables): a local- policy chain and a load-balancer IP', () => {
  /**
   * kube-proxy's nftables proxier puts the Local endpoints in a `local-HASH-…` chain the external chain
   * goes to, and sends load-balancer IPs through `service-ips` to the external chain. The lab writes the
   * vmap inline and has no LB IPs; this rewrites the captured ruleset to kube-proxy's layout.
   */
  function kubeProxyLayout(text: string): unknown {
    const j = JSON.parse(text) as { nftables: Array<Record<string, any>> };
    const ext = j.nftables.find((x) => x.chain && x.chain.name.startsWith('external-'))!.chain.name as string;
    const local = ext.replace(/^external-/, 'local-');
    const out: Array<Record<string, any>> = [];
    for (const it of j.nftables) {
      if (it.rule && it.rule.chain === ext && it.rule.expr.some((s: any) => s.vmap)) {
        out.push({ chain: { family: 'ip', table: 'kube-proxy', name: local, handle: 900 } });
        out.push({ rule: { ...it.rule, chain: local } });
        out.push({ rule: { ...it.rule, handle: 901, expr: [{ goto: { target: local } }] } });
        continue;
      }
      if (it.map && it.map.name === 'service-ips') {
        out.push({ map: { ...it.map, elem: [...it.map.elem, [{ concat: ['192.168.77.100', 'tcp', 80] }, { goto: { target: ext } }]] } });
        continue;
      }
      out.push(it);
    }
    return { nftables: out };
  }

  it('the load-balancer IP path and the NodePort path are Local and keep the terminating local endpoint', () => {
    expect(byPath(reduceNftRuleset(kubeProxyLayout(fx('nft-1.json'))))).toEqual({
      'cluster-ip 10.96.0.10:80 Cluster': [A, B], 'node-port *:30080 Local': [A], 'external-ip 192.168.77.100:80 Local': [A],
    });
    expect(byPath(reduceNftRuleset(kubeProxyLayout(fx('nft-2.json'))))).toEqual({
      'cluster-ip 10.96.0.10:80 Cluster': [B], 'node-port *:30080 Local': [A], 'external-ip 192.168.77.100:80 Local': [A],
    });
  });
});

describe('kube-proxy\'s own layout (iptables): a load-balancer IP', () => {
  const withLb = (text: string) => {
    const ext = /:(KUBE-EXT-\S+)/.exec(text)![1]!;
    return text.replace('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports',
      `-A KUBE-SERVICES -d 192.168.77.100/32 -p tcp -m comment --comment "default/web:http loadbalancer IP" -m tcp --dport 80 -j ${ext}\n-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports`);
  };
  it('the load-balancer IP path goes through KUBE-EXT- to KUBE-SVL-: Local, keeps the terminating local endpoint', () => {
    expect(byPath(reduceIptablesSave(withLb(fx('ipt-2.txt'))))).toEqual({
      'cluster-ip 10.96.0.10:80 Cluster': [B], 'node-port *:30080 Local': [A], 'external-ip 192.168.77.100:80 Local': [A],
    });
  });
});

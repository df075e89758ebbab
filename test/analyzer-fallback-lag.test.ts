/**
 * The terminating fallback when this node's EndpointSlice watch lags kube-proxy's. Real node, local-blackhole
 * (iptables), a red run of test/e2e-real.test.ts: one replica; the endpoint turned terminating and still
 * serving (no other endpoint ready) and kube-proxy received it at 39.4137 and kept the pod in its sync at
 * 39.414-39.521 (its own restore input still DNATs to it); the pod stopped serving, kube-proxy's sync at
 * 39.672-39.728 removed it (both paths: stamped 39.7167). The recorder's watch received both slice changes only
 * at 39.7647 and 39.7656 (the lab's own watch at 39.564 and 39.770), after the removal: the order of the
 * receipts said "no fallback" while the truth's EndpointSlice says fallback. The states' order shows it
 * instead: ready → terminating+serving with none ready → not serving; kube-proxy (API server ≥ v1.29, so
 * ≥ v1.26 by the version skew policy) keeps such an endpoint, so it removed it on the last change.
 * Synthetic facts with that run's instants (seconds after 00:10:00).
 */
import { describe, expect, it } from 'vitest';
import { emptyFacts, type Facts, type PathRuleEv } from '../analyzer/model/facts.js';
import { Identity } from '../analyzer/model/identity.js';
import { podSequences } from '../analyzer/model/pods.js';
import type { SliceChange } from '../analyzer/model/slices.js';

const T0 = 1796170200000000000;
const at = (s: number) => T0 + Math.round(s * 1e9);
const IP = '10.244.0.2', UID = 'u-old', SVC = 'default/web:http';
const V133 = { gitVersion: 'v1.33.13', major: 1, minor: 33 };

function identity(): Identity {
  const id = new Identity();
  const pod = (deletion: boolean) => JSON.stringify({
    metadata: { uid: UID, name: 'web-66d64cbb97-4dts4', namespace: 'default', creationTimestamp: '2026-12-02T00:10:30Z', ...(deletion ? { deletionTimestamp: '2026-12-02T00:11:09Z', deletionGracePeriodSeconds: 30 } : {}) },
    spec: { nodeName: 'lab-node' }, status: { podIP: IP },
  });
  id.addPodObject(at(36.747), 'LIST', pod(false));
  id.addPodObject(at(39.356314), 'MODIFIED', pod(true));
  id.finishKube(at(48.8));
  return id;
}
const path = (ts: number, added: boolean, p: 'cluster-ip' | 'node-port'): PathRuleEv => ({
  ts: at(ts), added, ip: IP, port: 8080, service: SVC, path: p, addr: p === 'cluster-ip' ? '10.96.0.10:80' : '*:30080', policy: p === 'cluster-ip' ? 'Cluster' : 'Local', node: null, mode: 'iptables',
});
const slice = (ts: number, change: SliceChange['change'], ready: boolean, serving: boolean, terminating: boolean, ip = IP, uid = UID): SliceChange => ({
  ts: at(ts), namespace: 'default', slice: 'web-wb2mg', service: 'web', ports: [8080], change, ip, ready, serving, terminating, podUid: uid, podName: null, node: 'lab-node',
});
/** the recorded run: both paths added at 36.638 (start snapshot), removed at 39.7167; the slice's states as received */
function facts(o: { server?: Facts['server']; slices?: SliceChange[]; removedAt?: number } = {}): Facts {
  const rm = o.removedAt ?? 39.716707;
  return {
    ...emptyFacts(), server: o.server === undefined ? V133 : o.server,
    pathRules: [path(36.638, true, 'cluster-ip'), path(36.638, true, 'node-port'), path(rm, false, 'cluster-ip'), path(rm, false, 'node-port')],
    sliceChanges: o.slices ?? [slice(36.928, 'added', true, true, false), slice(39.764745, 'modified', false, true, true), slice(39.765575, 'modified', false, false, true), slice(40.132909, 'removed', false, false, true)],
  };
}
const routes = (f: Facts) => {
  const s = podSequences(identity(), f, at(36.6), null)[0]!;
  return { fallback: s.routes.map((r) => [r.path, r.fallback]), evidence: s.evidence.filter((e) => e.startsWith('terminating fallback')) };
};

describe('the terminating fallback, rules removed before the terminating change was received', () => {
  it('ready → terminating+serving, none ready → not serving: both paths fell back, and the evidence says how it is known', () => {
    const r = routes(facts());
    expect(r.fallback).toEqual([['cluster-ip', true], ['node-port', true]]);
    expect(r.evidence).toHaveLength(2);
    expect(r.evidence[0]).toMatch(/^terminating fallback \(from the EndpointSlice's states\): the cluster-ip path 10\.96\.0\.10:80 \(Cluster\) stopped routing at 2026-12-02T00:10:39\.716707Z, 48\.038 ms before this node's watch received the endpoint terminating .* → not serving \(received 2026-12-02T00:10:39\.76557\dZ\), and kube-proxy \(API server v1\.33\.13, so ≥ v1\.26 by version skew\)/);
  });

  it('says nothing it cannot support', () => {
    const s = facts().sliceChanges;
    const none = [['cluster-ip', false], ['node-port', false]];
    // another endpoint ready when it turned terminating: kube-proxy drops a terminating endpoint then
    expect(routes(facts({ slices: [slice(36.9, 'added', true, true, false, '10.244.0.9', 'u-other'), ...s] })).fallback).toEqual(none);
    // terminating and NOT serving from the start: no fallback either
    expect(routes(facts({ slices: [s[0]!, slice(39.764745, 'modified', false, false, true), s[3]!] })).fallback).toEqual(none);
    // no later change recorded: nothing says which change the removal answered
    expect(routes(facts({ slices: s.slice(0, 2) })).fallback).toEqual(none);
    // not ready before it turned terminating: the removal may have answered that
    expect(routes(facts({ slices: [s[0]!, slice(38.0, 'modified', false, false, false), ...s.slice(1)] })).fallback).toEqual(none);
    // an API server too old (kube-proxy may predate ProxyTerminatingEndpoints) or unknown
    expect(routes(facts({ server: { gitVersion: 'v1.28.4', major: 1, minor: 28 } })).fallback).toEqual(none);
    expect(routes(facts({ server: null })).fallback).toEqual(none);
    // removed before the termination began (the deletion was received at 39.356)
    expect(routes(facts({ removedAt: 39.3 })).fallback).toEqual(none);
  });

  it('a removal after the terminating change was received is the fallback seen directly, as before', () => {
    const r = routes(facts({ removedAt: 39.9 }));
    expect(r.fallback).toEqual([['cluster-ip', true], ['node-port', true]]);
    expect(r.evidence[0]).toMatch(/kept routing to this pod 135\.255 ms after its endpoint turned terminating/);
  });
});

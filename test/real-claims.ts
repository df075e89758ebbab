/**
 * What the real node's scenarios claim beyond compareWithTruth, each checked against the truth (the
 * components' own records and the lab's own EndpointSlice watch):
 *  - every failure carries the path it took on this node: the cluster IP `VIP:PORT`, or the NodePort
 *    `*:NODEPORT` with the Service's traffic policy;
 *  - per terminated pod, the cluster IP path's loss (and the NodePort path's, for a NodePort Service) is
 *    reported with its address, stamped inside the kube-proxy sync that stopped routing to the pod (one
 *    transaction rewrites every path of a service port, in both modes);
 *  - the terminating fallback: kube-proxy keeps routing to a terminating endpoint that still serves when no
 *    other endpoint is ready (ProxyTerminatingEndpoints; on one node with one replica, the cluster IP path
 *    falls back as well as the Local one). Whether that held when the pod's endpoint turned terminating comes
 *    from the lab's watch (truth.slices); each path of the analysis must say the same (`fallback`).
 * One node only: the lab's watch has no node names, so "ready elsewhere" and "ready on this node" coincide.
 */
import type { Analysis } from '../schemas/analysis.js';
import { nsFromIso } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { RULE_RECEIPT_SLACK_NS } from './e2e-truth.js';

/** per terminated pod ip: did its endpoint still serve, with no other endpoint ready, when it turned terminating? */
export function truthFallback(t: Truth): Map<string, boolean> {
  const out = new Map<string, boolean>();
  for (const s of [...(t.slices ?? [])].sort((a, b) => a.ts_ns - b.ts_ns)) {
    for (const e of s.endpoints) {
      if (!e.terminating || out.has(e.ip)) continue;
      out.set(e.ip, e.serving && !s.endpoints.some((o) => o.ip !== e.ip && o.ready));
    }
  }
  return out;
}

export function realClaims(a: Analysis, t: Truth): string[] {
  const problems: string[] = [];
  const svc = t.service;
  const clusterAddr = `${svc.vip}:${svc.port}`;
  const nodePortAddr = svc.nodePort != null ? `*:${svc.nodePort}` : null;
  for (const f of a.failures) {
    const want = f.service === clusterAddr ? { path: 'cluster-ip', addr: clusterAddr, policy: 'Cluster' }
      : nodePortAddr && f.service?.endsWith(`:${svc.nodePort}`) ? { path: 'node-port', addr: nodePortAddr, policy: svc.externalTrafficPolicy } : null;
    if (!want) continue;
    if (JSON.stringify(f.path ?? null) !== JSON.stringify(want)) problems.push(`failure ${f.client} -> ${f.service} (${f.cause}): path ${JSON.stringify(f.path ?? null)}, expected ${JSON.stringify(want)}`);
  }
  const fallback = truthFallback(t);
  if (t.slices && t.pods.some((p) => !fallback.has(p.ip))) problems.push('truth: a terminated pod never turned terminating in the lab\'s EndpointSlice watch');
  for (const tp of t.pods) {
    if (!tp.ruleRemoved) continue;
    const ap = a.pods.find((p) => p.namespace === tp.namespace && p.name === tp.name);
    if (!ap) continue; // compareWithTruth reports it
    const { syncStartNs: s, syncEndNs: e, seq } = tp.ruleRemoved;
    for (const [path, addr] of [['cluster-ip', clusterAddr], ...(nodePortAddr ? [['node-port', nodePortAddr]] : [])] as Array<[string, string]>) {
      const r = ap.routes?.find((x) => x.path === path && x.addr === addr);
      if (!r) { problems.push(`pod ${tp.name}: no ${path} route ${addr} in routes[]`); continue; }
      const at = r.stoppedAt ? nsFromIso(r.stoppedAt) : null;
      if (at === null || at < s || at > e + RULE_RECEIPT_SLACK_NS) problems.push(`pod ${tp.name}: ${path} ${addr} stoppedAt ${r.stoppedAt}, outside kube-proxy sync ${seq} (${s}..${e} + ${RULE_RECEIPT_SLACK_NS / 1e6} ms)`);
      const fb = fallback.get(tp.ip);
      if (fb !== undefined && r.fallback !== fb) problems.push(`pod ${tp.name}: ${path} ${addr} fallback ${r.fallback}, the truth's EndpointSlice says ${fb ? 'still serving with no other endpoint ready (terminating fallback)' : 'another endpoint was ready (no fallback)'}`);
    }
  }
  return problems;
}

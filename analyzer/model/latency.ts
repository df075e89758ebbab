/**
 * Network programming latency, per EndpointSlice change: from this node receiving the change to its
 * rules reflecting it (kube-proxy's SLI histogram aggregates this and cannot resolve < 250 ms).
 */
import { iso, ms } from '../util.js';
import type { Facts } from './facts.js';

export interface LatencyRow { at: string; endpoint: string; change: 'removed' | 'added'; node: string | null; latencyMs: number | null; evidence: string[] }

const WINDOW_NS = 60e9;

export function programmingLatency(f: Facts, nodeName: string | null, hasRules: boolean): LatencyRow[] {
  const out: LatencyRow[] = [];
  const last = new Map<string, boolean>(); // ip -> routable per the slice
  for (const c of f.sliceChanges) {
    // kube-proxy routes ready endpoints (and serving-terminating ones only as a fallback)
    const routable = c.change !== 'removed' && c.ready === true;
    const before = last.get(c.ip) ?? false;
    last.set(c.ip, routable);
    if (routable === before) continue;
    if (c.eventType === 'LIST' || c.eventType === 'RELIST') continue;
    const change = routable ? 'added' : 'removed';
    const at = iso(c.ts) ?? '';
    const ev = [`EndpointSlice ${c.slice}: ${c.ip} ${c.change}${c.terminating ? ' (terminating)' : ''} ready=${c.ready} received at ${at}`];
    if (!hasRules) {
      out.push({ at, endpoint: c.ip, change, node: nodeName, latencyMs: null, evidence: [...ev, 'no rule events in the bundle (nftables source missing)'] });
      continue;
    }
    const nodes = new Set(f.rules.map((r) => r.node ?? nodeName));
    for (const node of nodes) {
      const r = f.rules.find((x) => x.ip === c.ip && x.added === routable && (x.node ?? nodeName) === node && x.ts >= c.ts - 5e9 && x.ts <= c.ts + WINDOW_NS);
      if (r) {
        out.push({ at, endpoint: c.ip, change, node, latencyMs: ms(r.ts - c.ts), evidence: [...ev, `endpoint-rule-${change} ${r.ip}:${r.port ?? '?'} (${r.service}) at ${iso(r.ts)}${r.ts < c.ts ? ' — before this node received the slice change (watch lag)' : ''}`] });
      } else {
        out.push({ at, endpoint: c.ip, change, node, latencyMs: null, evidence: [...ev, `no matching endpoint-rule-${change} within ${WINDOW_NS / 1e9} s`] });
      }
    }
  }
  return out;
}

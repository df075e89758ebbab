/** EndpointSlice watch rows → per-endpoint changes as this node received them. Pure and incremental. */
import { parseJson, str } from '../util.js';

export interface EndpointState {
  ip: string;
  ready: boolean | null;
  serving: boolean | null;
  terminating: boolean | null;
  podUid: string | null;
  podName: string | null;
  node: string | null;
}

export interface SliceChange extends EndpointState {
  ts: number;
  namespace: string | null;
  slice: string;
  service: string | null;
  ports: number[];
  change: 'added' | 'removed' | 'modified';
  /** the watch event type that carried it (LIST/RELIST: initial state, not a change) */
  eventType?: string;
}

function bool(v: unknown): boolean | null { return typeof v === 'boolean' ? v : null; }

/** Tracks each slice's endpoints and emits what changed with every watch event. */
export class SliceTracker {
  private slices = new Map<string, Map<string, EndpointState>>();
  bad = 0;

  push(ts: number, eventType: string, namespace: string | null, name: string | null, objText: string): SliceChange[] {
    const j = parseJson(objText);
    if (!j.ok) { this.bad++; return []; }
    const o = j.v;
    const md = (o.metadata ?? {}) as Record<string, unknown>;
    const slice = str(md.name) ?? name ?? '?';
    const ns = str(md.namespace) ?? namespace;
    const key = `${ns ?? ''}/${slice}`;
    const labels = (md.labels ?? {}) as Record<string, unknown>;
    const service = str(labels['kubernetes.io/service-name']);
    const ports = (Array.isArray(o.ports) ? (o.ports as Array<Record<string, unknown>>) : [])
      .map((p) => (p && typeof p.port === 'number' ? p.port : null)).filter((x): x is number => x !== null);
    const prev = this.slices.get(key) ?? new Map<string, EndpointState>();
    const next = new Map<string, EndpointState>();
    if (eventType !== 'DELETED') {
      for (const ep of Array.isArray(o.endpoints) ? (o.endpoints as Array<Record<string, unknown>>) : []) {
        if (!ep || typeof ep !== 'object') continue;
        const c = (ep.conditions ?? {}) as Record<string, unknown>;
        const ref = (ep.targetRef ?? {}) as Record<string, unknown>;
        for (const ip of Array.isArray(ep.addresses) ? ep.addresses : []) {
          if (typeof ip !== 'string') continue;
          next.set(ip, {
            ip, ready: bool(c.ready), serving: bool(c.serving), terminating: bool(c.terminating),
            podUid: str(ref.uid), podName: str(ref.name), node: str(ep.nodeName),
          });
        }
      }
    }
    const out: SliceChange[] = [];
    const base = { ts, namespace: ns, slice, service, ports, eventType };
    for (const [ip, s] of next) {
      const p = prev.get(ip);
      if (!p) out.push({ ...base, ...s, change: 'added' });
      else if (p.ready !== s.ready || p.serving !== s.serving || p.terminating !== s.terminating || p.podUid !== s.podUid) out.push({ ...base, ...s, change: 'modified' });
    }
    for (const [ip, p] of prev) if (!next.has(ip)) out.push({ ...base, ...p, change: 'removed' });
    if (eventType === 'DELETED') this.slices.delete(key); else this.slices.set(key, next);
    return out;
  }
}

/** "~10.42.0.97(terminating)" style, as in the timeline users know. */
export function describeChange(c: SliceChange): string {
  const sym = c.change === 'added' ? '+' : c.change === 'removed' ? '-' : '~';
  const st = c.terminating ? 'terminating' : c.ready ? 'ready' : c.ready === false ? 'not-ready' : 'unknown';
  return `${sym}${c.ip}(${st})`;
}

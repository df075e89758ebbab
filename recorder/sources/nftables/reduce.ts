/**
 * The reachable-DNAT-target reduction shared by both kube-proxy modes, and the diff between two
 * reductions. Pure: no I/O.
 *
 * kube-proxy rewrites every chain on every sync, so rule-level add/delete lines are noise. What
 * matters for the race is: which backends can a new connection to a service still be DNATed to on
 * this node? A reduction answers that as a set of (service, endpoint) targets, plus the services for
 * which the node rejects or drops instead (no endpoints / no local endpoints).
 */
import { ev, type Clock, type RtEvent } from '../../../schemas/events.js';

export type RuleMode = 'nftables' | 'iptables' | 'iptables-legacy';

export interface EndpointTarget {
  mode: RuleMode;
  /** namespace/name:port from chain names or comments, else the VIP ip:port */
  service: string;
  vip: string | null;
  node_port: number | null;
  endpoint: string;
  ip: string;
  port: number;
  chain: string | null;
}

export interface NoEndpointTarget {
  mode: RuleMode;
  service: string;
  vip: string | null;
  node_port: number | null;
  action: 'reject' | 'drop';
}

export type PathKind = 'cluster-ip' | 'node-port' | 'external-ip';

/** One path (cluster IP, NodePort, load-balancer/external IP) of a service reaching one endpoint. */
export interface PathTarget {
  mode: RuleMode;
  service: string;
  path: PathKind;
  /** ip:port of the path; a NodePort is `*:PORT` */
  addr: string;
  policy: 'Cluster' | 'Local';
  endpoint: string;
  ip: string;
  port: number;
  chain: string | null;
}

export interface Reduction {
  /** key: mode|service|endpoint — any path */
  endpoints: Map<string, EndpointTarget>;
  /** key: mode|service|action|vip|node_port */
  noEndpoints: Map<string, NoEndpointTarget>;
  /** key: mode|service|path|addr|endpoint — per path */
  paths: Map<string, PathTarget>;
}

export function emptyReduction(): Reduction {
  return { endpoints: new Map(), noEndpoints: new Map(), paths: new Map() };
}

export function pathKey(t: Pick<PathTarget, 'mode' | 'service' | 'path' | 'addr' | 'endpoint'>): string {
  return `${t.mode}|${t.service}|${t.path}|${t.addr}|${t.endpoint}`;
}

export function endpointKey(t: { mode: RuleMode; service: string; endpoint: string }): string {
  return `${t.mode}|${t.service}|${t.endpoint}`;
}
export function noEndpointKey(t: NoEndpointTarget): string {
  return `${t.mode}|${t.service}|${t.action}|${t.vip ?? ''}|${t.node_port ?? ''}`;
}

/** Path context while walking: what the rules have said so far about the service being reached. */
export interface PathCtx {
  service: string | null;
  vip: string | null;
  /** true when the VIP came from a ClusterIP-style entry (map/rule jumping straight into the service chain) */
  vipIsCluster: boolean;
  nodePort: number | null;
  /** the path being walked (from the entry map/rule), when known */
  path?: { kind: PathKind; addr: string; policy: 'Cluster' | 'Local' } | null;
  /**
   * true below a rule that matches the packet's source (pod CIDR, `fib saddr type local`, `-s`,
   * `--src-type LOCAL`): such a branch carries only pod- or node-originated traffic, not the path's own
   */
  guarded?: boolean;
}

/** Which stored VIPs came from a ClusterIP-style entry (walk-only bookkeeping). */
const vipFromCluster = new WeakMap<Reduction, Map<string, boolean>>();

/** Add a DNAT target, merging several paths to the same (service, endpoint): a ClusterIP VIP wins. */
export function addEndpoint(red: Reduction, mode: RuleMode, ctx: PathCtx, ep: { ip: string; port: number }, chain: string | null): void {
  const endpoint = fmtAddr(ep.ip, ep.port);
  const service = ctx.service ?? ctx.vip ?? `?->${endpoint}`;
  const key = endpointKey({ mode, service, endpoint });
  let vc = vipFromCluster.get(red);
  if (!vc) { vc = new Map(); vipFromCluster.set(red, vc); }
  const prev = red.endpoints.get(key);
  if (!prev) {
    red.endpoints.set(key, { mode, service, vip: ctx.vip, node_port: ctx.nodePort, endpoint, ip: ep.ip, port: ep.port, chain });
    vc.set(key, ctx.vipIsCluster);
    return;
  }
  if (ctx.vip && (!prev.vip || (ctx.vipIsCluster && !vc.get(key)))) {
    prev.vip = ctx.vip;
    vc.set(key, ctx.vipIsCluster);
  }
  if (prev.node_port === null && ctx.nodePort !== null) prev.node_port = ctx.nodePort;
  if (!prev.chain && chain) prev.chain = chain;
}

/** Record the endpoint on the path being walked (unguarded branches only). */
export function addPathEndpoint(red: Reduction, mode: RuleMode, ctx: PathCtx, ep: { ip: string; port: number }, chain: string | null): void {
  if (!ctx.path || ctx.guarded) return;
  const endpoint = fmtAddr(ep.ip, ep.port);
  const service = ctx.service ?? ctx.vip ?? `?->${endpoint}`;
  const t: PathTarget = { mode, service, path: ctx.path.kind, addr: ctx.path.addr, policy: ctx.path.policy, endpoint, ip: ep.ip, port: ep.port, chain };
  const k = pathKey(t);
  if (!red.paths.has(k)) red.paths.set(k, t);
}

export function addNoEndpoint(red: Reduction, t: NoEndpointTarget): void {
  red.noEndpoints.set(noEndpointKey(t), t);
}

/** Merge several reductions (e.g. ip and ip6 tables, or nft and iptables-nft rules on one node). */
export function mergeReductions(...reds: Reduction[]): Reduction {
  const out = emptyReduction();
  for (const r of reds) {
    for (const [k, v] of r.endpoints) if (!out.endpoints.has(k)) out.endpoints.set(k, v);
    for (const [k, v] of r.noEndpoints) if (!out.noEndpoints.has(k)) out.noEndpoints.set(k, v);
    for (const [k, v] of r.paths ?? []) if (!out.paths.has(k)) out.paths.set(k, v);
  }
  return out;
}

export function fmtAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Service label from a kube-proxy nftables chain name:
 * `service-ULMVA6XW-default/web/tcp/http` → `default/web:http`,
 * `endpoint-5OJB2KTY-default/web/tcp/http__10.244.0.5/8080` → `default/web:http`;
 * an empty port name gives `default/web` (kube-proxy's ServicePortName format).
 */
export function serviceFromNftChain(chain: string): string | null {
  const m = /^(?:service|external|endpoint|local|firewall|cluster)-[A-Z0-9]+-([^/]+)\/([^/]+)\/[a-z]+\/([^_]*?)(?:__.*)?$/.exec(chain);
  if (!m) return null;
  return m[3] ? `${m[1]}/${m[2]}:${m[3]}` : `${m[1]}/${m[2]}`;
}

/** Service label from a kube-proxy iptables comment: its first word when it looks like ns/name[:port]. */
export function serviceFromComment(comment: string | null | undefined): string | null {
  if (!comment) return null;
  const first = comment.trim().split(/\s+/)[0] ?? '';
  return /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[-a-zA-Z0-9_.]*)?$/.test(first) ? first : null;
}

export interface DiffOptions {
  ts_ns: number;
  clock: Clock;
}

/**
 * Events for what changed between two consecutive reductions: endpoint-rule-removed/added and
 * no-endpoint-rule-removed/added, all stamped `ts_ns` (the first monitor line of the burst that caused it).
 * Removals first, so a replaced endpoint reads removed-then-added at the same instant.
 */
export function diffReductions(prev: Reduction, next: Reduction, o: DiffOptions): RtEvent[] {
  const out: RtEvent[] = [];
  const epEvent = (kind: 'endpoint-rule-added' | 'endpoint-rule-removed', t: EndpointTarget) =>
    ev(kind, o.ts_ns, 'nftables', t.endpoint, {
      service: t.service, vip: t.vip, node_port: t.node_port, endpoint: t.endpoint, ip: t.ip, port: t.port,
      chain: t.chain, mode: t.mode, clock: o.clock,
    });
  const neEvent = (kind: 'no-endpoint-rule-added' | 'no-endpoint-rule-removed', t: NoEndpointTarget) =>
    ev(kind, o.ts_ns, 'nftables', t.service, {
      service: t.service, vip: t.vip, node_port: t.node_port, action: t.action, mode: t.mode,
    });
  for (const [k, t] of prev.endpoints) if (!next.endpoints.has(k)) out.push(epEvent('endpoint-rule-removed', t));
  for (const [k, t] of prev.noEndpoints) if (!next.noEndpoints.has(k)) out.push(neEvent('no-endpoint-rule-removed', t));
  for (const [k, t] of next.endpoints) if (!prev.endpoints.has(k)) out.push(epEvent('endpoint-rule-added', t));
  for (const [k, t] of next.noEndpoints) if (!prev.noEndpoints.has(k)) out.push(neEvent('no-endpoint-rule-added', t));
  return out;
}

/**
 * Per path: path-rule-removed/added when a path (cluster IP, NodePort, load-balancer/external IP) stops
 * or starts routing to an endpoint, stamped `ts_ns`. diffReductions' any-path events keep their meaning.
 */
export function diffPaths(prev: Reduction, next: Reduction, o: DiffOptions): RtEvent[] {
  const out: RtEvent[] = [];
  const pEvent = (kind: 'path-rule-added' | 'path-rule-removed', t: PathTarget) =>
    ev(kind, o.ts_ns, 'nftables', t.endpoint, {
      service: t.service, path: t.path, addr: t.addr, policy: t.policy, endpoint: t.endpoint, ip: t.ip, port: t.port,
      chain: t.chain, mode: t.mode, clock: o.clock,
    });
  const prevPaths = prev.paths ?? new Map<string, PathTarget>();
  const nextPaths = next.paths ?? new Map<string, PathTarget>();
  for (const [k, t] of prevPaths) if (!nextPaths.has(k)) out.push(pEvent('path-rule-removed', t));
  for (const [k, t] of nextPaths) if (!prevPaths.has(k)) out.push(pEvent('path-rule-added', t));
  return out;
}

/**
 * Pure nftables rule generation shaped like kube-proxy's nftables proxier (pkg/proxy/nftables):
 * `table ip kube-proxy`, the service-ips / service-nodeports / no-endpoint-* verdict maps,
 * service-HASH-ns/svc/proto/port chains with `numgen random mod N vmap`, endpoint-HASH-...__ip/port
 * chains with `dnat to`. Every sync is one `nft -f -` transaction that rewrites every chain; endpoint
 * chains that are no longer used are flushed at once and deleted by a later sync (>= staleDeleteMs).
 */
import { categorize, sha256b32, servicePortNameString, type Endpoint, type ServicePort } from './model.js';

export interface NftConfig {
  /** cluster/pod CIDR: traffic from outside it to a ClusterIP is masqueraded */
  podCIDR: string;
  serviceCIDR: string;
  /** addresses that accept NodePort traffic */
  nodePortIPs: string[];
  masqueradeMark?: string;
  /** delete a stale chain at the first sync at least this long after it became stale */
  staleDeleteMs?: number;
}

export interface NftSyncState {
  /** chains written by the previous sync (service, external and endpoint chains) */
  active: string[];
  /** stale chain -> ms when it became stale */
  stale: Record<string, number>;
}

export const emptyNftState = (): NftSyncState => ({ active: [], stale: {} });

const MAX_BASE = 127 - 'external-'.length - 1;

function hashAndTruncate(name: string): string {
  let s = sha256b32(name).slice(0, 8) + '-' + name;
  if (s.length > MAX_BASE) s = s.slice(0, MAX_BASE - 3) + '...';
  return s;
}

const svcBase = (sp: ServicePort) => `${sp.namespace}/${sp.name}/${sp.protocol}/${sp.portName}`;
export const serviceChain = (sp: ServicePort) => `service-${hashAndTruncate(svcBase(sp))}`;
export const externalChain = (sp: ServicePort) => `external-${hashAndTruncate(svcBase(sp))}`;
export const endpointChain = (sp: ServicePort, ep: Pick<Endpoint, 'ip' | 'port'>) =>
  `endpoint-${hashAndTruncate(`${svcBase(sp)}__${ep.ip}/${ep.port}`)}`;

const T = 'ip kube-proxy';

function baseTransaction(cfg: NftConfig): string[] {
  const mark = cfg.masqueradeMark ?? '0x4000';
  const L: string[] = [];
  L.push(`add table ${T} { comment "rules for kube-proxy" ; }`);
  L.push(`add set ${T} cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }`);
  L.push(`add set ${T} nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }`);
  L.push(`add map ${T} no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }`);
  L.push(`add map ${T} no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }`);
  L.push(`add map ${T} service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }`);
  L.push(`add map ${T} service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }`);
  const chains: Array<[string, string]> = [
    ['cluster-ips-check', ''],
    ['filter-forward', '{ type filter hook forward priority 0 ; }'],
    ['filter-input', '{ type filter hook input priority 0 ; }'],
    ['filter-output', '{ type filter hook output priority 0 ; }'],
    ['mark-for-masquerade', ''],
    ['masquerading', ''],
    ['nat-output', '{ type nat hook output priority -100 ; }'],
    ['nat-postrouting', '{ type nat hook postrouting priority 100 ; }'],
    ['nat-prerouting', '{ type nat hook prerouting priority -100 ; }'],
    ['nodeport-endpoints-check', ''],
    ['reject-chain', '{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }'],
    ['services', ''],
    ['service-endpoints-check', ''],
  ];
  for (const [c, spec] of chains) L.push(`add chain ${T} ${c}${spec ? ' ' + spec : ''}`);
  // every sync rewrites the base chains and the maps
  for (const [c] of chains) L.push(`flush chain ${T} ${c}`);
  for (const m of ['cluster-ips', 'nodeport-ips']) L.push(`flush set ${T} ${m}`);
  for (const m of ['no-endpoint-nodeports', 'no-endpoint-services', 'service-ips', 'service-nodeports']) L.push(`flush map ${T} ${m}`);
  L.push(`add rule ${T} cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"`);
  L.push(`add rule ${T} cluster-ips-check ip daddr { ${cfg.serviceCIDR} } drop comment "Drop traffic to unallocated ClusterIPs"`);
  L.push(`add rule ${T} filter-forward ct state new jump service-endpoints-check`);
  L.push(`add rule ${T} filter-forward ct state new jump cluster-ips-check`);
  L.push(`add rule ${T} filter-input ct state new jump nodeport-endpoints-check`);
  L.push(`add rule ${T} filter-input ct state new jump service-endpoints-check`);
  L.push(`add rule ${T} filter-output ct state new jump service-endpoints-check`);
  L.push(`add rule ${T} filter-output ct state new jump cluster-ips-check`);
  L.push(`add rule ${T} mark-for-masquerade mark set mark or ${mark}`);
  L.push(`add rule ${T} masquerading mark and ${mark} == 0 return`);
  L.push(`add rule ${T} masquerading mark set mark xor ${mark}`);
  L.push(`add rule ${T} masquerading masquerade fully-random`);
  L.push(`add rule ${T} nat-output jump services`);
  L.push(`add rule ${T} nat-postrouting jump masquerading`);
  L.push(`add rule ${T} nat-prerouting jump services`);
  L.push(`add rule ${T} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports`);
  L.push(`add rule ${T} reject-chain reject`);
  L.push(`add rule ${T} services ip daddr . meta l4proto . th dport vmap @service-ips`);
  L.push(`add rule ${T} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports`);
  L.push(`add rule ${T} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services`);
  for (const ip of cfg.nodePortIPs) L.push(`add element ${T} nodeport-ips { ${ip} }`);
  return L;
}

function endpointVmap(sp: ServicePort, eps: Endpoint[]): string {
  return `numgen random mod ${eps.length} vmap { ${eps.map((e, i) => `${i} : goto ${endpointChain(sp, e)}`).join(' , ')} }`;
}

export interface NftSyncResult {
  text: string;
  next: NftSyncState;
  /** chains that became stale in this sync (flushed now) */
  flushed: string[];
  /** stale chains deleted in this sync */
  deleted: string[];
  /** true when a later sync is needed to delete stale chains */
  pendingDeletes: boolean;
}

/** One whole-table sync transaction (text for `nft -f -`). Pure: nowMs only decides stale deletion. */
export function nftSync(sps: ServicePort[], cfg: NftConfig, prev: NftSyncState, nowMs: number): NftSyncResult {
  const L = baseTransaction(cfg);
  const decl: string[] = [];
  const baseLen = L.length;
  const active: string[] = [];
  for (const sp of sps) {
    const label = servicePortNameString(sp);
    const { cluster, local } = categorize(sp);
    const svcChain = serviceChain(sp), extChain = externalChain(sp);
    const usesExternal = sp.nodePort != null;
    const externalEps = sp.externalLocal ? local : cluster;
    L.push('', `# ${label}`);
    L.push(`add element ${T} cluster-ips { ${sp.clusterIP} }`);
    if (cluster.length === 0) {
      L.push(`add element ${T} no-endpoint-services { ${sp.clusterIP} . ${sp.protocol} . ${sp.port} comment "${label}" : goto reject-chain }`);
      if (usesExternal) L.push(`add element ${T} no-endpoint-nodeports { ${sp.protocol} . ${sp.nodePort} comment "${label}" : goto reject-chain }`);
      continue;
    }
    active.push(svcChain);
    decl.push(`add chain ${T} ${svcChain}`, `flush chain ${T} ${svcChain}`);
    L.push(`add rule ${T} ${svcChain} ip daddr ${sp.clusterIP} ip saddr != ${cfg.podCIDR} jump mark-for-masquerade`);
    L.push(`add rule ${T} ${svcChain} ${endpointVmap(sp, cluster)}`);
    L.push(`add element ${T} service-ips { ${sp.clusterIP} . ${sp.protocol} . ${sp.port} : goto ${svcChain} }`);
    if (usesExternal) {
      active.push(extChain);
      decl.push(`add chain ${T} ${extChain}`, `flush chain ${T} ${extChain}`);
      if (sp.externalLocal) {
        L.push(`add rule ${T} ${extChain} ip saddr ${cfg.podCIDR} goto ${svcChain} comment "short-circuit pod traffic"`);
        L.push(`add rule ${T} ${extChain} fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"`);
        L.push(`add rule ${T} ${extChain} fib saddr type local goto ${svcChain} comment "short-circuit local traffic"`);
        if (local.length) L.push(`add rule ${T} ${extChain} ${endpointVmap(sp, local)}`);
      } else {
        L.push(`add rule ${T} ${extChain} jump mark-for-masquerade`);
        L.push(`add rule ${T} ${extChain} goto ${svcChain}`);
      }
      L.push(`add element ${T} service-nodeports { ${sp.protocol} . ${sp.nodePort} : goto ${extChain} }`);
      if (externalEps.length === 0) {
        L.push(`add element ${T} no-endpoint-nodeports { ${sp.protocol} . ${sp.nodePort} comment "${label}" : drop }`);
      }
    }
    const used = new Map<string, Endpoint>();
    for (const e of [...cluster, ...(sp.externalLocal && usesExternal ? local : [])]) used.set(endpointChain(sp, e), e);
    for (const [chain, e] of [...used.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      active.push(chain);
      decl.push(`add chain ${T} ${chain}`, `flush chain ${T} ${chain}`);
      L.push(`add rule ${T} ${chain} ip saddr ${e.ip} jump mark-for-masquerade`);
      L.push(`add rule ${T} ${chain} meta l4proto ${sp.protocol} dnat to ${e.ip}:${e.port}`);
    }
  }
  // chains are declared (and flushed) before any rule refers to them
  L.splice(baseLen, 0, ...decl);
  // stale chains: flushed now, deleted once they have been stale long enough
  const activeSet = new Set(active);
  const stale: Record<string, number> = {};
  const flushed: string[] = [], deleted: string[] = [];
  const cutoff = nowMs - (cfg.staleDeleteMs ?? 1000);
  for (const [c, since] of Object.entries(prev.stale)) {
    if (activeSet.has(c)) continue;
    if (since <= cutoff) { deleted.push(c); L.push(`delete chain ${T} ${c}`); } else stale[c] = since;
  }
  for (const c of prev.active) {
    if (activeSet.has(c) || c in stale || deleted.includes(c)) continue;
    flushed.push(c);
    stale[c] = nowMs;
    L.push(`flush chain ${T} ${c}`);
  }
  return {
    text: L.join('\n') + '\n', next: { active, stale }, flushed, deleted,
    pendingDeletes: Object.keys(stale).length > 0,
  };
}

/** Create-only preamble so that `delete table` works at teardown even if no sync happened. */
export const nftTeardownText = (): string => `add table ${T}\ndelete table ${T}\n`;

/**
 * Pure iptables-restore input shaped like kube-proxy's iptables proxier (pkg/proxy/iptables):
 * nat KUBE-SERVICES / KUBE-SVC-<hash> / KUBE-SEP-<hash> / KUBE-NODEPORTS / KUBE-EXT- / KUBE-SVL-,
 * `-m statistic --mode random --probability p`, `-j DNAT --to-destination ip:port`, filter
 * KUBE-SERVICES / KUBE-EXTERNAL-SERVICES for no-endpoint REJECT/DROP. Restored with --noflush: every
 * KUBE chain is declared (which flushes it) and refilled; chains no longer used are declared and -X'd.
 */
import { categorize, sha256b32, servicePortNameString, type Endpoint, type ServicePort } from './model.js';

export interface IptablesConfig {
  podCIDR: string;
  masqueradeMark?: string;
}

const portProtoHash = (s: string, proto: string) => sha256b32(s + proto).slice(0, 16);
export const svcChainName = (sp: ServicePort) => `KUBE-SVC-${portProtoHash(servicePortNameString(sp), sp.protocol)}`;
export const extChainName = (sp: ServicePort) => `KUBE-EXT-${portProtoHash(servicePortNameString(sp), sp.protocol)}`;
export const svlChainName = (sp: ServicePort) => `KUBE-SVL-${portProtoHash(servicePortNameString(sp), sp.protocol)}`;
export const sepChainName = (sp: ServicePort, e: Pick<Endpoint, 'ip' | 'port'>) =>
  `KUBE-SEP-${sha256b32(servicePortNameString(sp) + sp.protocol + `${e.ip}:${e.port}`).slice(0, 16)}`;

/** Jump rules from the built-in chains (kube-proxy ensures these with iptables -C/-I, not in the restore). */
export const IPTABLES_JUMPS: Array<{ table: string; chain: string; args: string[] }> = [
  { table: 'nat', chain: 'PREROUTING', args: ['-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
  { table: 'nat', chain: 'OUTPUT', args: ['-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
  { table: 'nat', chain: 'POSTROUTING', args: ['-m', 'comment', '--comment', 'kubernetes postrouting rules', '-j', 'KUBE-POSTROUTING'] },
  { table: 'filter', chain: 'INPUT', args: ['-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes externally-visible service portals', '-j', 'KUBE-EXTERNAL-SERVICES'] },
  { table: 'filter', chain: 'FORWARD', args: ['-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
  { table: 'filter', chain: 'OUTPUT', args: ['-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES'] },
];

const q = (s: string) => (/[\s"]/.test(s) ? `"${s.replace(/"/g, '\\"')}"` : s);

export interface IptablesSyncResult {
  text: string;
  /** KUBE-SVC/SEP/EXT/SVL chains in the nat table after this restore */
  natChains: string[];
  deleted: string[];
}

/**
 * One whole-table restore. prevNatChains: per-service chains of the previous restore (deleted with -X
 * when unused now, as kube-proxy does).
 */
export function iptablesSync(sps: ServicePort[], cfg: IptablesConfig, prevNatChains: string[]): IptablesSyncResult {
  const mark = cfg.masqueradeMark ?? '0x4000';
  const natChains: string[] = [];
  const natRules: string[] = [];
  const filterRules: string[] = [];
  for (const sp of sps) {
    const label = servicePortNameString(sp);
    const { cluster, local } = categorize(sp);
    const svc = svcChainName(sp), ext = extChainName(sp), svl = svlChainName(sp);
    const p = sp.protocol;
    const usesExternal = sp.nodePort != null;
    const externalEps = sp.externalLocal ? local : cluster;
    if (cluster.length === 0) {
      filterRules.push(`-A KUBE-SERVICES -m comment --comment ${q(`${label} has no endpoints`)} -m ${p} -p ${p} -d ${sp.clusterIP} --dport ${sp.port} -j REJECT`);
    } else {
      natChains.push(svc);
      natRules.push(`-A KUBE-SERVICES -m comment --comment ${q(`${label} cluster IP`)} -m ${p} -p ${p} -d ${sp.clusterIP} --dport ${sp.port} -j ${svc}`);
      natRules.push(`-A ${svc} -m comment --comment ${q(`${label} cluster IP`)} -m ${p} -p ${p} -d ${sp.clusterIP} --dport ${sp.port} ! -s ${cfg.podCIDR} -j KUBE-MARK-MASQ`);
      natRules.push(...lbRules(sp, svc, cluster));
    }
    if (usesExternal) {
      if (externalEps.length === 0) {
        filterRules.push(`-A KUBE-EXTERNAL-SERVICES -m comment --comment ${q(`${label} has no ${sp.externalLocal && cluster.length ? 'local ' : ''}endpoints`)} -m addrtype --dst-type LOCAL -m ${p} -p ${p} --dport ${sp.nodePort} -j ${sp.externalLocal && cluster.length ? 'DROP' : 'REJECT'}`);
      }
      if (cluster.length > 0) {
        natChains.push(ext);
        natRules.push(`-A KUBE-NODEPORTS -m comment --comment ${q(label)} -m ${p} -p ${p} --dport ${sp.nodePort} -j ${ext}`);
        if (sp.externalLocal) {
          natRules.push(`-A ${ext} -m comment --comment ${q(`pod traffic for ${label} external destinations`)} -s ${cfg.podCIDR} -j ${svc}`);
          natRules.push(`-A ${ext} -m comment --comment ${q(`masquerade LOCAL traffic for ${label} external destinations`)} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ`);
          natRules.push(`-A ${ext} -m comment --comment ${q(`route LOCAL traffic for ${label} external destinations`)} -m addrtype --src-type LOCAL -j ${svc}`);
          natRules.push(`-A ${ext} -j ${svl}`);
          natChains.push(svl);
          natRules.push(...lbRules(sp, svl, local));
        } else {
          natRules.push(`-A ${ext} -m comment --comment ${q(`masquerade traffic for ${label} external destinations`)} -j KUBE-MARK-MASQ`);
          natRules.push(`-A ${ext} -j ${svc}`);
        }
      }
    }
    const used = new Map<string, Endpoint>();
    for (const e of [...cluster, ...(sp.externalLocal && usesExternal ? local : [])]) used.set(sepChainName(sp, e), e);
    for (const [sep, e] of used) {
      natChains.push(sep);
      natRules.push(`-A ${sep} -m comment --comment ${q(label)} -s ${e.ip} -j KUBE-MARK-MASQ`);
      natRules.push(`-A ${sep} -m comment --comment ${q(label)} -m ${p} -p ${p} -j DNAT --to-destination ${e.ip}:${e.port}`);
    }
  }
  natRules.push(`-A KUBE-SERVICES -m comment --comment ${q('kubernetes service nodeports; NOTE: this must be the last rule in this chain')} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`);
  const active = new Set(natChains);
  const deleted = prevNatChains.filter((c) => !active.has(c));
  const out: string[] = [];
  out.push('*filter');
  for (const c of ['KUBE-NODEPORTS', 'KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-PROXY-FIREWALL']) out.push(`:${c} - [0:0]`);
  out.push(...filterRules);
  out.push(`-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP`);
  out.push('COMMIT');
  out.push('*nat');
  for (const c of ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ']) out.push(`:${c} - [0:0]`);
  for (const c of natChains) out.push(`:${c} - [0:0]`);
  for (const c of deleted) out.push(`:${c} - [0:0]`);
  out.push(`-A KUBE-POSTROUTING -m mark ! --mark ${mark}/${mark} -j RETURN`);
  out.push(`-A KUBE-POSTROUTING -j MARK --xor-mark ${mark}`);
  out.push(`-A KUBE-POSTROUTING -m comment --comment ${q('kubernetes service traffic requiring SNAT')} -j MASQUERADE --random-fully`);
  out.push(`-A KUBE-MARK-MASQ -j MARK --or-mark ${mark}`);
  out.push(...natRules);
  for (const c of deleted) out.push(`-X ${c}`);
  out.push('COMMIT');
  return { text: out.join('\n') + '\n', natChains, deleted };
}

function lbRules(sp: ServicePort, chain: string, eps: Endpoint[]): string[] {
  const label = servicePortNameString(sp);
  return eps.map((e, i) => {
    const n = eps.length - i;
    const stat = n > 1 ? ` -m statistic --mode random --probability ${(1 / n).toFixed(10)}` : '';
    return `-A ${chain} -m comment --comment ${q(`${label} -> ${e.ip}:${e.port}`)}${stat} -j ${sepChainName(sp, e)}`;
  });
}

/**
 * Pure parsing of `iptables-save` text (kube-proxy iptables mode, iptables-nft or legacy) and the same
 * reachable-DNAT-target reduction as nft-json.ts: from the built-in chains of the nat table through
 * KUBE-SERVICES → KUBE-SVC-<hash> (`-d VIP/32 --dport`, `--comment "ns/svc:port cluster IP"`) →
 * KUBE-SEP-<hash> (`-j DNAT --to-destination ip:port`), KUBE-NODEPORTS → KUBE-EXT-/KUBE-SVL- (Local),
 * and the filter table's "has no endpoints" REJECT / "has no local endpoints" DROP rules.
 * iptables-nft rules show in `nft -j` output only as opaque xt statements: this text is the content.
 */
import {
  addEndpoint, addNoEndpoint, addPathEndpoint, emptyReduction, fmtAddr, serviceFromComment, type PathCtx, type Reduction, type RuleMode,
} from './reduce.js';

export interface IptRule {
  chain: string;
  /** -j TARGET */
  jump: string | null;
  /** -g TARGET */
  goto: string | null;
  /** destination address when matched positively (-d X[/32]) */
  dst: string | null;
  proto: string | null;
  dport: number | null;
  comment: string | null;
  toDestination: string | null;
  probability: number | null;
  dstTypeLocal: boolean;
  /** the rule matches the packet's source (-s / ! -s / --src-type): it carries only part of a path's traffic */
  srcMatch: boolean;
  /** the rule line as printed */
  raw: string;
}

export interface IptTable {
  name: string;
  /** chain -> policy ('-' for user chains) */
  chains: Map<string, string>;
  rules: Map<string, IptRule[]>;
}

export interface ParsedIptablesSave {
  tables: Map<string, IptTable>;
  malformed: number;
}

/** Split an iptables-save rule line into words, honouring "double quotes" and \" escapes. */
export function splitWords(line: string): string[] | null {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (q) {
      if (c === '\\' && i + 1 < line.length) { cur += line[++i]; continue; }
      if (c === '"') { q = false; continue; }
      cur += c;
      continue;
    }
    if (c === '"') { q = true; inWord = true; continue; }
    if (c === ' ' || c === '\t') {
      if (inWord) { out.push(cur); cur = ''; inWord = false; }
      continue;
    }
    cur += c;
    inWord = true;
  }
  if (q) return null;
  if (inWord) out.push(cur);
  return out;
}

function parseRule(line: string): IptRule | null {
  const w = splitWords(line);
  if (!w || w[0] !== '-A' || !w[1]) return null;
  const r: IptRule = {
    chain: w[1], jump: null, goto: null, dst: null, proto: null, dport: null, comment: null, toDestination: null,
    probability: null, dstTypeLocal: false, srcMatch: false, raw: line,
  };
  let neg = false;
  for (let i = 2; i < w.length; i++) {
    const a = w[i]!;
    if (a === '!') { neg = true; continue; }
    const v = w[i + 1];
    const take = (): string | undefined => { i++; return v; };
    switch (a) {
      case '-j': case '--jump': r.jump = take() ?? null; break;
      case '-g': case '--goto': r.goto = take() ?? null; break;
      case '-d': case '--destination': { const d = take(); if (!neg && d) r.dst = d.replace(/\/(32|128)$/, ''); break; }
      case '-p': case '--protocol': { const p = take(); if (!neg && p) r.proto = p; break; }
      case '--dport': case '--destination-port': { const p = take(); if (!neg && p && /^\d+$/.test(p)) r.dport = Number(p); break; }
      case '--comment': r.comment = take() ?? null; break;
      case '--to-destination': r.toDestination = take() ?? null; break;
      case '--probability': { const p = Number(take()); if (Number.isFinite(p)) r.probability = p; break; }
      case '--dst-type': if (take() === 'LOCAL' && !neg) r.dstTypeLocal = true; break;
      case '-s': case '--source': case '--src-type': take(); r.srcMatch = true; break;
      default:
        // options with one value we do not need (-s, -m, --mode, ...), flags without value are rare here
        if (a.startsWith('-') && v !== undefined && !v.startsWith('-')) i++;
    }
    neg = false;
  }
  if (!r.jump && !r.goto) {
    // a rule without a target (counting only) is legal
  }
  return r;
}

/** Parse iptables-save output (one or several tables). Malformed lines are skipped and counted. */
export function parseIptablesSave(text: string): ParsedIptablesSave {
  const tables = new Map<string, IptTable>();
  let cur: IptTable | null = null;
  let malformed = 0;
  for (const rawLine of text.split('\n')) {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      const name = line.slice(1).trim();
      if (!name) { malformed++; continue; }
      cur = tables.get(name) ?? { name, chains: new Map(), rules: new Map() };
      tables.set(name, cur);
      continue;
    }
    if (line === 'COMMIT') { cur = null; continue; }
    if (!cur) { malformed++; continue; }
    if (line.startsWith(':')) {
      const m = /^:(\S+)\s+(\S+)/.exec(line);
      if (!m) { malformed++; continue; }
      cur.chains.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith('-A ')) {
      const r = parseRule(line);
      if (!r) { malformed++; continue; }
      if (!cur.chains.has(r.chain)) cur.chains.set(r.chain, '-');
      const list = cur.rules.get(r.chain) ?? [];
      list.push(r);
      cur.rules.set(r.chain, list);
      continue;
    }
    malformed++;
  }
  return { tables, malformed };
}

/** True when the text holds kube-proxy chains (KUBE-SERVICES and friends). */
export function hasKubeChains(p: ParsedIptablesSave): boolean {
  for (const t of p.tables.values()) for (const c of t.chains.keys()) if (c.startsWith('KUBE-')) return true;
  return false;
}

function parseHostPort(s: string): { ip: string; port: number } | null {
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)(-\d+)?$/.exec(s);
  if (v6) return { ip: v6[1]!, port: Number(v6[2]) };
  const v4 = /^(\d+\.\d+\.\d+\.\d+):(\d+)(-\d+)?$/.exec(s);
  if (v4) return { ip: v4[1]!, port: Number(v4[2]) };
  return null;
}

const NO_EP = /has no (local )?endpoints/;
const MAX_DEPTH = 32;

/**
 * The traffic policy of a KUBE-EXT- chain (or a KUBE-FW- chain in front of one): Local when pod- and
 * node-originated traffic is sent to KUBE-SVC- by a source match and the rest to KUBE-SVL- (local endpoints).
 */
function extPolicy(t: IptTable, chain: string, depth = 0): 'Cluster' | 'Local' {
  for (const r of t.rules.get(chain) ?? []) {
    const tg = r.jump ?? r.goto;
    if (!tg) continue;
    if (tg.startsWith('KUBE-SVL-') || tg.startsWith('KUBE-XLB-')) return 'Local';
    if (r.srcMatch && tg.startsWith('KUBE-SVC-')) return 'Local';
    if (chain.startsWith('KUBE-FW-') && tg.startsWith('KUBE-EXT-') && depth < 3) return extPolicy(t, tg, depth + 1);
  }
  return 'Cluster';
}

/** Which path a rule enters: KUBE-SERVICES -d VIP → cluster IP or LB/external IP, KUBE-NODEPORTS --dport → NodePort. */
function pathOf(t: IptTable, chain: string, r: IptRule, target: string): PathCtx['path'] {
  if (chain === 'KUBE-NODEPORTS' && r.dport !== null && /^KUBE-(EXT|SVC|XLB|FW)-/.test(target)) {
    return { kind: 'node-port', addr: `*:${r.dport}`, policy: target.startsWith('KUBE-SVC-') ? 'Cluster' : extPolicy(t, target) };
  }
  if (!r.dst || r.dport === null) return null;
  const addr = fmtAddr(r.dst, r.dport);
  if (target.startsWith('KUBE-SVC-')) return { kind: 'cluster-ip', addr, policy: 'Cluster' };
  if (target.startsWith('KUBE-SVL-')) return { kind: 'cluster-ip', addr, policy: 'Local' };
  if (/^KUBE-(EXT|FW|XLB)-/.test(target)) return { kind: 'external-ip', addr, policy: extPolicy(t, target) };
  return null;
}

function walk(t: IptTable, red: Reduction, mode: RuleMode): void {
  const visiting = new Set<string>();
  const visit = (chain: string, ctx: PathCtx, depth: number): void => {
    const rules = t.rules.get(chain);
    if (!rules || depth > MAX_DEPTH) return;
    const vkey = `${chain}|${ctx.service}|${ctx.vip}|${ctx.nodePort}|${ctx.vipIsCluster}|${ctx.path?.kind}|${ctx.path?.addr}|${ctx.guarded}`;
    if (visiting.has(vkey)) return;
    visiting.add(vkey);
    for (const r of rules) {
      const target = r.jump ?? r.goto;
      if (!target) continue;
      const label = serviceFromComment(r.comment) ?? ctx.service;
      if (target === 'DNAT') {
        const hp = r.toDestination ? parseHostPort(r.toDestination) : null;
        if (hp) {
          addEndpoint(red, mode, { ...ctx, service: label }, hp, chain);
          addPathEndpoint(red, mode, { ...ctx, service: label, guarded: ctx.guarded || r.srcMatch }, hp, chain);
        }
        continue;
      }
      if ((target === 'REJECT' || target === 'DROP' || target === 'KUBE-MARK-DROP') && r.comment && NO_EP.test(r.comment)) {
        const svc = serviceFromComment(r.comment) ?? ctx.service;
        const vip = r.dst && r.dport !== null ? fmtAddr(r.dst, r.dport) : ctx.vip;
        const nodePort = !r.dst && r.dport !== null ? r.dport : ctx.nodePort;
        addNoEndpoint(red, {
          mode, service: svc ?? vip ?? `nodeport:${nodePort}`, vip: r.dst ? vip : (ctx.vip ?? null), node_port: nodePort,
          action: target === 'REJECT' ? 'reject' : 'drop',
        });
        continue;
      }
      if (!t.rules.has(target) && !t.chains.has(target)) continue; // a built-in target (MARK, MASQUERADE, RETURN...)
      const next: PathCtx = { ...ctx, service: label, path: ctx.path ?? pathOf(t, chain, r, target), guarded: ctx.guarded || (!!ctx.path && r.srcMatch) };
      if (r.dst && r.dport !== null && /^KUBE-(SVC|EXT|FW|SVL|XLB)-/.test(target)) {
        next.vip = fmtAddr(r.dst, r.dport);
        next.vipIsCluster = target.startsWith('KUBE-SVC-') || /cluster IP/.test(r.comment ?? '');
      }
      if (chain === 'KUBE-NODEPORTS' && r.dport !== null) next.nodePort = r.dport;
      visit(target, next, depth + 1);
    }
    visiting.delete(vkey);
  };
  for (const [name, policy] of t.chains) {
    if (policy !== '-') visit(name, { service: null, vip: null, vipIsCluster: false, nodePort: null }, 0);
  }
}

/** Reduce iptables-save text (nat, plus filter for the no-endpoint rules) to the reachable DNAT targets. */
export function reduceIptablesSave(input: string | ParsedIptablesSave, mode: RuleMode = 'iptables'): Reduction {
  const p = typeof input === 'string' ? parseIptablesSave(input) : input;
  const red = emptyReduction();
  for (const name of ['nat', 'filter']) {
    const t = p.tables.get(name);
    if (t) walk(t, red, mode);
  }
  return red;
}

/**
 * Pure reduction of `nft -j list ruleset` (kube-proxy nftables mode) to the DNAT targets reachable per
 * service. Walks from every base chain (a chain with a hook) of each `kube-proxy` table through
 * jump/goto, anonymous verdict maps (`numgen random mod N vmap { 0 : goto endpoint-… }`) and named verdict
 * maps (`ip daddr . meta l4proto . th dport vmap @service-ips`, with the map's elements), to `dnat to`.
 * A flushed chain reaches nothing; a chain no base chain reaches counts for nothing.
 *
 * The no-endpoint paths come from the `no-endpoint-services` / `no-endpoint-nodeports` maps: each element
 * (commented with the service label) whose verdict is `drop`, or a goto/jump into a chain that rejects
 * (kube-proxy's `reject-chain`).
 */
import { InputError } from '../../../schemas/errors.js';
import {
  addEndpoint, addNoEndpoint, addPathEndpoint, emptyReduction, fmtAddr, serviceFromNftChain, type PathCtx, type Reduction,
} from './reduce.js';

type J = Record<string, unknown>;

interface NftChain { name: string; hook: string | null; rules: unknown[][] }
interface NftMapElem { key: unknown; value: unknown; comment: string | null }
interface NftTable { family: string; name: string; chains: Map<string, NftChain>; maps: Map<string, NftMapElem[]> }

export interface NftModel {
  tables: NftTable[];
  /** JSON objects of a kind this parser does not use (metainfo, set, counter, ...) */
  ignored: number;
}

const isObj = (v: unknown): v is J => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Parse nft's JSON ruleset (text or already parsed). Throws InputError if it is not nft JSON. */
export function parseNftRuleset(input: string | unknown): NftModel {
  let doc: unknown = input;
  if (typeof input === 'string') {
    try { doc = JSON.parse(input); } catch (e) {
      throw new InputError(`nft ruleset is not JSON: ${(e as Error).message}`);
    }
  }
  if (!isObj(doc) || !Array.isArray(doc.nftables)) throw new InputError('nft ruleset JSON has no "nftables" array');
  const tables = new Map<string, NftTable>();
  const table = (family: unknown, name: unknown): NftTable => {
    const k = `${String(family)} ${String(name)}`;
    let t = tables.get(k);
    if (!t) { t = { family: String(family), name: String(name), chains: new Map(), maps: new Map() }; tables.set(k, t); }
    return t;
  };
  let ignored = 0;
  for (const item of doc.nftables) {
    if (!isObj(item)) { ignored++; continue; }
    if (isObj(item.table)) { table(item.table.family, item.table.name); continue; }
    if (isObj(item.chain)) {
      const c = item.chain;
      const t = table(c.family, c.table);
      const name = String(c.name);
      const existing = t.chains.get(name);
      if (existing) existing.hook = typeof c.hook === 'string' ? c.hook : existing.hook;
      else t.chains.set(name, { name, hook: typeof c.hook === 'string' ? c.hook : null, rules: [] });
      continue;
    }
    if (isObj(item.rule)) {
      const r = item.rule;
      const t = table(r.family, r.table);
      const name = String(r.chain);
      let ch = t.chains.get(name);
      if (!ch) { ch = { name, hook: null, rules: [] }; t.chains.set(name, ch); }
      ch.rules.push(Array.isArray(r.expr) ? r.expr : []);
      continue;
    }
    if (isObj(item.map)) {
      const m = item.map;
      const t = table(m.family, m.table);
      const elems: NftMapElem[] = [];
      if (Array.isArray(m.elem)) {
        for (const e of m.elem) {
          if (!Array.isArray(e) || e.length < 2) continue;
          let key: unknown = e[0];
          let comment: string | null = null;
          // an element with a comment is wrapped: {"elem": {"val": KEY, "comment": "ns/svc:port"}}
          if (isObj(key) && isObj(key.elem)) {
            comment = typeof key.elem.comment === 'string' ? key.elem.comment : null;
            key = key.elem.val;
          }
          elems.push({ key, value: e[1], comment });
        }
      }
      t.maps.set(String(m.name), elems);
      continue;
    }
    ignored++;
  }
  return { tables: [...tables.values()], ignored };
}

/** True when the ruleset holds iptables-nft chains of kube-proxy's iptables mode (KUBE-* in non-kube-proxy tables). */
export function hasIptablesKubeChains(model: NftModel): boolean {
  return model.tables.some((t) => t.name !== 'kube-proxy' && [...t.chains.keys()].some((c) => c.startsWith('KUBE-')));
}
/** True when the ruleset holds a kube-proxy nftables-mode table. */
export function hasNftKubeProxyTable(model: NftModel): boolean {
  return model.tables.some((t) => t.name === 'kube-proxy');
}

/** A key like {"concat": ["10.96.0.10", "tcp", 80]} or ["tcp", 30080] → vip and/or node port. */
function keyInfo(key: unknown): { vip: string | null; nodePort: number | null } {
  const parts = isObj(key) && Array.isArray(key.concat) ? key.concat : [key];
  const ip = parts.find((p) => typeof p === 'string' && /^[0-9a-fA-F:.]+$/.test(p) && (p.includes('.') || p.includes(':')));
  const port = parts.find((p) => typeof p === 'number');
  if (typeof ip === 'string' && typeof port === 'number') return { vip: fmtAddr(ip, port), nodePort: null };
  if (typeof port === 'number' && parts.length === 2) return { vip: null, nodePort: port };
  return { vip: null, nodePort: null };
}

function verdictTarget(v: unknown): string | null {
  if (!isObj(v)) return null;
  for (const k of ['goto', 'jump'] as const) {
    const x = v[k];
    if (isObj(x) && typeof x.target === 'string') return x.target;
  }
  return null;
}

/** Does every path through this chain end in reject (or drop)? Used for kube-proxy's reject-chain. */
function chainAction(t: NftTable, name: string): 'reject' | 'drop' | null {
  const ch = t.chains.get(name);
  if (!ch) return null;
  for (const expr of ch.rules) {
    for (const s of expr) {
      if (isObj(s) && 'reject' in s) return 'reject';
      if (isObj(s) && 'drop' in s) return 'drop';
    }
  }
  return null;
}

const MAX_DEPTH = 32;

/** A rule matching the packet's source (`ip saddr …`, `fib saddr type local`): it carries only part of a path's traffic. */
function matchesSource(expr: unknown[]): boolean {
  for (const s of expr) {
    if (!isObj(s) || !isObj(s.match)) continue;
    const left = s.match.left;
    if (isObj(left) && isObj(left.payload) && left.payload.field === 'saddr') return true;
    if (isObj(left) && isObj(left.fib) && Array.isArray(left.fib.flags) && left.fib.flags.includes('saddr')) return true;
  }
  return false;
}

/**
 * The traffic policy of an external chain (kube-proxy's `external-` chain, or a `firewall-` chain in
 * front of it): Local when pod- and node-originated traffic is short-circuited to the cluster chain by
 * a source match and the rest goes to the local endpoints (a `local-` chain, or the lab's inline vmap).
 */
function externalPolicy(t: NftTable, chain: string, depth = 0): 'Cluster' | 'Local' {
  const ch = t.chains.get(chain);
  if (!ch || depth > 3) return 'Cluster';
  for (const expr of ch.rules) {
    for (const stmt of expr) {
      const tg = isObj(stmt) ? verdictTarget(stmt) : null;
      if (!tg) continue;
      if (tg.startsWith('local-')) return 'Local';
      if (matchesSource(expr) && (tg.startsWith('service-') || tg.startsWith('cluster-'))) return 'Local';
      if (chain.startsWith('firewall-') && tg.startsWith('external-')) return externalPolicy(t, tg, depth + 1);
    }
  }
  return 'Cluster';
}

/** Which path a named verdict map's element enters (service-ips: cluster IP or LB/external IP; service-nodeports: NodePort). */
function pathOf(t: NftTable, mapName: string, target: string, info: { vip: string | null; nodePort: number | null }): PathCtx['path'] {
  if (/nodeport/.test(mapName) && info.nodePort !== null) return { kind: 'node-port', addr: `*:${info.nodePort}`, policy: externalPolicy(t, target) };
  if (!info.vip) return null;
  if (target.startsWith('service-') || target.startsWith('cluster-')) return { kind: 'cluster-ip', addr: info.vip, policy: 'Cluster' };
  if (target.startsWith('local-')) return { kind: 'cluster-ip', addr: info.vip, policy: 'Local' };
  if (target.startsWith('external-') || target.startsWith('firewall-')) return { kind: 'external-ip', addr: info.vip, policy: externalPolicy(t, target) };
  return null;
}

function walkTable(t: NftTable, red: Reduction): void {
  const visiting = new Set<string>();
  const visit = (chainName: string, ctx: PathCtx, depth: number): void => {
    const ch = t.chains.get(chainName);
    if (!ch || depth > MAX_DEPTH) return;
    const vkey = `${chainName}|${ctx.service}|${ctx.vip}|${ctx.nodePort}|${ctx.vipIsCluster}|${ctx.path?.kind}|${ctx.path?.addr}|${ctx.guarded}`;
    if (visiting.has(vkey)) return;
    visiting.add(vkey);
    const label = serviceFromNftChain(chainName);
    const base: PathCtx = label ? { ...ctx, service: label } : ctx;
    for (const expr of ch.rules) {
      // a branch taken only for some sources (pod CIDR, node-local) is not the path's own traffic
      const here: PathCtx = base.path && !base.guarded && matchesSource(expr) ? { ...base, guarded: true } : base;
      for (const stmt of expr) {
        if (!isObj(stmt)) continue;
        const target = verdictTarget(stmt);
        if (target) { visit(target, here, depth + 1); continue; }
        if (isObj(stmt.dnat)) {
          const d = stmt.dnat;
          if (typeof d.addr === 'string') {
            const port = typeof d.port === 'number' ? d.port : Number(d.port);
            if (Number.isFinite(port)) {
              addEndpoint(red, 'nftables', here, { ip: d.addr, port }, chainName);
              addPathEndpoint(red, 'nftables', here, { ip: d.addr, port }, chainName);
            }
          }
          continue;
        }
        if (isObj(stmt.vmap)) {
          const data = stmt.vmap.data;
          if (isObj(data) && Array.isArray(data.set)) {
            // anonymous verdict map: numgen random mod N vmap { 0 : goto endpoint-…, … }
            for (const pair of data.set) {
              if (!Array.isArray(pair) || pair.length < 2) continue;
              const tg = verdictTarget(pair[1]);
              if (tg) visit(tg, here, depth + 1);
            }
          } else if (typeof data === 'string' && data.startsWith('@')) {
            const mapName = data.slice(1);
            const noEndpoint = mapName.startsWith('no-endpoint');
            for (const el of t.maps.get(mapName) ?? []) {
              const info = keyInfo(el.key);
              const tg = verdictTarget(el.value);
              const svc = el.comment ?? (tg ? serviceFromNftChain(tg) : null) ?? here.service;
              if (noEndpoint) {
                const action = isObj(el.value) && 'drop' in el.value ? 'drop'
                  : isObj(el.value) && 'reject' in el.value ? 'reject'
                    : tg ? chainAction(t, tg) : null;
                if (action) {
                  addNoEndpoint(red, {
                    mode: 'nftables', service: svc ?? info.vip ?? `nodeport:${info.nodePort}`,
                    vip: info.vip, node_port: info.nodePort, action,
                  });
                }
                continue;
              }
              if (!tg) continue;
              const next: PathCtx = {
                service: svc,
                vip: info.vip ?? here.vip,
                vipIsCluster: info.vip ? tg.startsWith('service-') : here.vipIsCluster,
                nodePort: info.nodePort ?? here.nodePort,
                path: here.path ?? pathOf(t, mapName, tg, info),
                guarded: here.guarded,
              };
              visit(tg, next, depth + 1);
            }
          }
        }
      }
    }
    visiting.delete(vkey);
  };
  for (const ch of t.chains.values()) {
    if (ch.hook) visit(ch.name, { service: null, vip: null, vipIsCluster: false, nodePort: null }, 0);
  }
}

/** Reduce a ruleset to the reachable DNAT targets of kube-proxy's nftables-mode tables. */
export function reduceNftRuleset(input: string | unknown | NftModel): Reduction {
  const model = isObj(input) && Array.isArray((input as unknown as NftModel).tables)
    ? input as unknown as NftModel : parseNftRuleset(input);
  const red = emptyReduction();
  for (const t of model.tables) if (t.name === 'kube-proxy') walkTable(t, red);
  return red;
}

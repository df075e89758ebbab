/**
 * Pure pieces of `rolltrace import --nft-monitor`: timestamps on hand-captured `nft -j monitor` lines,
 * and a replay model of the ruleset that monitor records are applied to (no I/O).
 *
 * `nft -j monitor` prints no timestamps, so a capture made by hand must carry one per line:
 *   1795292068.851527 {json}            (`nft -j monitor | ts '%.s'`, or a `date +%s.%N` read loop)
 *   [1795292068.851527] {json}
 *   2026-11-21T20:25:11.851527Z {json}  (any ISO-8601 instant with Z or an offset)
 * A line without one inherits the previous line's stamp (lines before the first stamp take the first).
 *
 * The model keeps what `nft -j list ruleset` would print — tables, chains, rules (by handle), sets and
 * maps with their elements — so the live source's reduction (reduceNftRuleset) can run on it.
 */

type J = Record<string, unknown>;
const isObj = (v: unknown): v is J => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface StampedLine { ts: number | null; body: string }

const EPOCH = /^\[?\s*(\d{9,11})(?:\.(\d{1,9}))?\s*\]?(?:\s+|$)/;
const ISO = /^\[?\s*(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)\s*\]?(?:\s+|$)/;

/** Split a leading timestamp off one line. ts is epoch ns, or null when the line carries none. */
export function splitStamp(raw: string): StampedLine {
  const line = raw.replace(/\r$/, '');
  const e = EPOCH.exec(line);
  if (e) return { ts: Number(e[1]) * 1e9 + Number((e[2] ?? '').padEnd(9, '0')), body: line.slice(e[0].length) };
  const i = ISO.exec(line);
  if (i) {
    const zone = i[3] === 'Z' ? 'Z' : i[3]!.replace(/^([+-]\d\d)(\d\d)$/, '$1:$2');
    const ms = Date.parse(`${i[1]!.replace(' ', 'T')}${zone}`);
    if (Number.isFinite(ms)) return { ts: ms * 1e6 + Number((i[2] ?? '').padEnd(9, '0')), body: line.slice(i[0].length) };
  }
  return { ts: null, body: line };
}

/**
 * Stamp every line: a line without a stamp inherits the previous one; lines before the first stamp
 * take the first. Returns null when no line carries a stamp at all.
 */
export function stampLines(lines: string[]): Array<{ ts: number; body: string }> | null {
  const split = lines.map(splitStamp);
  const first = split.find((l) => l.ts !== null)?.ts;
  if (first === undefined || first === null) return null;
  let cur = first;
  return split.map((l) => {
    if (l.ts !== null) cur = l.ts;
    return { ts: cur, body: l.body };
  });
}

interface MChain { obj: J; rules: J[] }
/** elements by key: a Map keeps insertion order, and replacing a value keeps its place */
interface MSet { kind: 'set' | 'map'; obj: J; elems: Map<string, unknown> }
interface MTable { obj: J; chains: Map<string, MChain>; sets: Map<string, MSet> }

export interface ApplyResult {
  /** the record changed nothing the model knows of (unknown handle, object or operation) */
  unknown: boolean;
  /** the record holds iptables-nft `xt` statements (opaque: iptables mode) */
  xt: boolean;
}

function elemKey(e: unknown): string {
  let k = Array.isArray(e) ? e[0] : e;
  if (isObj(k) && isObj(k.elem)) k = k.elem.val;
  return JSON.stringify(k);
}

/** A ruleset rebuilt from `nft -j list ruleset` JSON and `nft -j monitor` records. */
export class NftReplayModel {
  private tables = new Map<string, MTable>();

  /** Start from `nft -j list ruleset` JSON (text or parsed). Throws on anything that is not nft JSON. */
  static fromRuleset(doc: unknown): NftReplayModel {
    const m = new NftReplayModel();
    if (!isObj(doc) || !Array.isArray(doc.nftables)) throw new Error('no "nftables" array');
    for (const item of doc.nftables) {
      if (!isObj(item)) continue;
      const [op] = Object.keys(item);
      if (op && ['table', 'chain', 'rule', 'set', 'map'].includes(op)) m.apply({ add: item });
    }
    return m;
  }

  private table(o: J, create: boolean): MTable | undefined {
    const family = String(o.family ?? 'ip');
    const name = String(o.table ?? o.name);
    const k = `${family} ${name}`;
    let t = this.tables.get(k);
    if (!t && create) {
      t = { obj: { family, name }, chains: new Map(), sets: new Map() };
      this.tables.set(k, t);
    }
    return t;
  }

  /** Apply one monitor record ({"add": {"rule": {...}}} etc.). */
  apply(doc: unknown): ApplyResult {
    const res: ApplyResult = { unknown: false, xt: false };
    if (!isObj(doc)) return { ...res, unknown: true };
    const [op] = Object.keys(doc);
    const body = op ? doc[op] : undefined;
    if (!op || !isObj(body)) return { ...res, unknown: true };
    const [object] = Object.keys(body);
    const o = object ? body[object] : undefined;
    if (!object || !isObj(o)) return { ...res, unknown: true };
    if (object === 'rule' && JSON.stringify(o.expr ?? []).includes('"xt"')) res.xt = true;
    const adding = ['add', 'create', 'insert', 'replace', 'update'].includes(op);
    const removing = op === 'delete' || op === 'destroy';
    switch (object) {
      case 'table': {
        if (adding) this.table({ family: o.family, table: o.name }, true);
        else if (removing) { if (!this.tables.delete(`${String(o.family ?? 'ip')} ${String(o.name)}`)) res.unknown = true; }
        else if (op === 'flush') {
          const t = this.table({ family: o.family, table: o.name }, false);
          if (t) for (const c of t.chains.values()) c.rules = []; else res.unknown = true;
        } else res.unknown = true;
        return res;
      }
      case 'chain': {
        const t = this.table(o, adding);
        const name = String(o.name);
        if (!t) return { ...res, unknown: true };
        if (adding) {
          const c = t.chains.get(name);
          if (c) c.obj = { ...c.obj, ...o };
          else t.chains.set(name, { obj: { ...o }, rules: [] });
        } else if (removing) { if (!t.chains.delete(name)) res.unknown = true; }
        else if (op === 'flush') { const c = t.chains.get(name); if (c) c.rules = []; else res.unknown = true; }
        else if (op === 'rename' && typeof o.newname === 'string') {
          const c = t.chains.get(name);
          if (!c) return { ...res, unknown: true };
          t.chains.delete(name);
          c.obj = { ...c.obj, name: o.newname };
          for (const r of c.rules) r.chain = o.newname;
          t.chains.set(o.newname, c);
        } else res.unknown = true;
        return res;
      }
      case 'rule': {
        const t = this.table(o, adding);
        if (!t) return { ...res, unknown: true };
        const chainName = typeof o.chain === 'string' ? o.chain : null;
        if (adding) {
          if (!chainName) return { ...res, unknown: true };
          let c = t.chains.get(chainName);
          if (!c) { c = { obj: { family: o.family, table: o.table, name: chainName }, rules: [] }; t.chains.set(chainName, c); }
          const rule: J = { ...o };
          const existing = typeof o.handle === 'number' ? c.rules.findIndex((r) => r.handle === o.handle) : -1;
          if (existing >= 0) c.rules[existing] = rule;
          else if (op === 'insert') c.rules.unshift(rule);
          else c.rules.push(rule);
          return res;
        }
        if (removing) {
          // a deleted rule is reported by handle (its statements may be missing)
          const chains = chainName ? [t.chains.get(chainName)].filter((c): c is MChain => !!c) : [...t.chains.values()];
          for (const c of chains) {
            const i = c.rules.findIndex((r) => r.handle === o.handle);
            if (i >= 0) { c.rules.splice(i, 1); return res; }
          }
          return { ...res, unknown: true };
        }
        return { ...res, unknown: true };
      }
      case 'set': case 'map': {
        const t = this.table(o, adding);
        const name = String(o.name);
        if (!t) return { ...res, unknown: true };
        if (adding) {
          const s = t.sets.get(name);
          const { elem, ...rest } = o;
          if (s) { s.obj = { ...s.obj, ...rest }; s.kind = object; }
          else t.sets.set(name, { kind: object, obj: rest, elems: new Map() });
          if (Array.isArray(elem)) this.addElems(t.sets.get(name)!, elem);
        } else if (removing) {
          // anonymous sets (__map0, __set1: inline in rules, never listed) are deleted with their rule
          if (!t.sets.delete(name) && !/^__(map|set)\d+$/.test(name)) res.unknown = true;
        } else if (op === 'flush') { const s = t.sets.get(name); if (s) s.elems.clear(); else res.unknown = true; }
        else res.unknown = true;
        return res;
      }
      case 'element': {
        const t = this.table(o, false);
        const s = t?.sets.get(String(o.name));
        const list = isObj(o.elem) && Array.isArray(o.elem.set) ? o.elem.set : Array.isArray(o.elem) ? o.elem : null;
        if (!s || !list) return { ...res, unknown: true };
        if (adding) this.addElems(s, list);
        else if (removing) {
          let hit = false;
          for (const e of list) hit = s.elems.delete(elemKey(e)) || hit;
          if (!hit) res.unknown = true;
        } else res.unknown = true;
        return res;
      }
      default:
        return { ...res, unknown: true };
    }
  }

  private addElems(s: MSet, list: unknown[]): void {
    for (const e of list) s.elems.set(elemKey(e), e);
  }

  /** The model as `nft -j list ruleset` JSON. */
  toRuleset(): { nftables: J[] } {
    const out: J[] = [];
    for (const t of this.tables.values()) {
      out.push({ table: t.obj });
      for (const c of t.chains.values()) out.push({ chain: c.obj });
      for (const s of t.sets.values()) out.push({ [s.kind]: s.elems.size ? { ...s.obj, elem: [...s.elems.values()] } : s.obj });
      for (const c of t.chains.values()) for (const r of c.rules) out.push({ rule: r });
    }
    return { nftables: out };
  }

  /** True when the model holds iptables-nft KUBE-* chains (kube-proxy iptables mode). */
  hasIptablesKube(): boolean {
    for (const t of this.tables.values()) {
      if (t.obj.name === 'kube-proxy') continue;
      for (const c of t.chains.keys()) if (c.startsWith('KUBE-')) return true;
    }
    return false;
  }
}

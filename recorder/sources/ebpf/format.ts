/** Pure parser of tracefs `events/<cat>/<name>/format` files and of their __print_symbolic tables. */

export interface TpField { name: string; type: string; size: number; array: number | null; offset: number; signed: boolean | null }
export interface TpFormat { name: string; fields: Map<string, TpField>; symbols: Map<string, Map<number, string>> }

export function parseTracepointFormat(text: string): TpFormat {
  const name = /^name:\s*(\S+)/m.exec(text)?.[1] ?? '';
  const fields = new Map<string, TpField>();
  for (const m of text.matchAll(/field:([^;]+);\s*offset:(\d+);\s*size:(\d+);(?:\s*signed:(\d+);)?/g)) {
    const decl = m[1]!.trim();
    const d = /^(.*?)\s*\b(\w+)\s*(?:\[(\d*)\])?$/.exec(decl);
    if (!d) continue;
    fields.set(d[2]!, { name: d[2]!, type: d[1]!.trim(), size: Number(m[3]), array: d[3] !== undefined ? Number(d[3] || 0) : null, offset: Number(m[2]), signed: m[4] === undefined ? null : m[4] === '1' });
  }
  const symbols = new Map<string, Map<number, string>>();
  const pf = /^print fmt:(.*)$/m.exec(text)?.[1] ?? '';
  for (const m of pf.matchAll(/__print_symbolic\(REC->(\w+),((?:\s*\{\s*[^{}]+\}\s*,?)+)\)/g)) {
    const tbl = new Map<number, string>();
    for (const e of m[2]!.matchAll(/\{\s*([^,{}]+?)\s*,\s*"([^"]*)"\s*\}/g)) {
      const k = /^-?\d+$/.test(e[1]!) ? Number(e[1]) : NaN;
      if (!Number.isNaN(k)) tbl.set(k, e[2]!);
    }
    if (tbl.size) symbols.set(m[1]!, tbl);
  }
  return { name, fields, symbols };
}

export const TCP_STATES: Record<number, string> = {
  1: 'ESTABLISHED', 2: 'SYN_SENT', 3: 'SYN_RECV', 4: 'FIN_WAIT1', 5: 'FIN_WAIT2', 6: 'TIME_WAIT', 7: 'CLOSE',
  8: 'CLOSE_WAIT', 9: 'LAST_ACK', 10: 'LISTEN', 11: 'CLOSING', 12: 'NEW_SYN_RECV',
};

/**
 * Kubernetes label selectors: parse the string form (`a=b,c!=d,e in (x,y),!f,g`), evaluate it on a
 * label map, and turn a LabelSelector object (matchLabels/matchExpressions) into the string form.
 * Pure; throws InputError on a selector it cannot parse.
 */
import { InputError } from '../../../schemas/errors.js';

export type Requirement =
  | { key: string; op: '=' | '!='; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | '!exists' };

/** Split on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; } else cur += ch;
  }
  out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x !== '');
}

const KEY = /^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$/;

export function parseSelector(sel: string): Requirement[] {
  const reqs: Requirement[] = [];
  for (const part of splitTop(sel)) {
    let m: RegExpMatchArray | null;
    if ((m = part.match(/^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/))) {
      reqs.push({ key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((v) => v.trim()).filter((v) => v !== '') });
    } else if ((m = part.match(/^([^=!\s]+)\s*!=\s*(\S*)$/))) {
      reqs.push({ key: m[1]!, op: '!=', value: m[2]! });
    } else if ((m = part.match(/^([^=!\s]+)\s*==?\s*(\S*)$/))) {
      reqs.push({ key: m[1]!, op: '=', value: m[2]! });
    } else if ((m = part.match(/^!\s*(\S+)$/))) {
      reqs.push({ key: m[1]!, op: '!exists' });
    } else if (KEY.test(part)) {
      reqs.push({ key: part, op: 'exists' });
    } else {
      throw new InputError(`cannot parse label selector ${JSON.stringify(sel)} near ${JSON.stringify(part)}`);
    }
  }
  const VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
  for (const r of reqs) {
    const vals = 'value' in r ? [r.value] : 'values' in r ? r.values : [];
    if (!KEY.test(r.key) || !vals.every((v) => VALUE.test(v))) {
      throw new InputError(`cannot parse label selector ${JSON.stringify(sel)}: bad key or value in ${JSON.stringify(r.key)}`);
    }
  }
  return reqs;
}

export function matchesSelector(reqs: Requirement[], labels: Record<string, string> | undefined | null): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    switch (r.op) {
      case '=': return has && l[r.key] === r.value;
      case '!=': return !has || l[r.key] !== r.value;
      case 'in': return has && r.values.includes(l[r.key]!);
      case 'notin': return !has || !r.values.includes(l[r.key]!);
      case 'exists': return has;
      case '!exists': return !has;
    }
  });
}

/** A Deployment's spec.selector (LabelSelector) as a selector string. */
export function labelSelectorToString(sel: {
  matchLabels?: Record<string, string> | null;
  matchExpressions?: Array<{ key: string; operator: string; values?: string[] | null }> | null;
} | null | undefined): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) parts.push(`${k}=${v}`);
  for (const e of sel?.matchExpressions ?? []) {
    const vals = (e.values ?? []).join(',');
    switch (e.operator) {
      case 'In': parts.push(`${e.key} in (${vals})`); break;
      case 'NotIn': parts.push(`${e.key} notin (${vals})`); break;
      case 'Exists': parts.push(e.key); break;
      case 'DoesNotExist': parts.push(`!${e.key}`); break;
      default: throw new InputError(`unsupported label selector operator ${e.operator}`);
    }
  }
  return parts.join(',');
}

/** A Service selector (map) matches a pod's labels when every pair is present. */
export function mapSelectorMatches(sel: Record<string, string> | null | undefined, labels: Record<string, string> | null | undefined): boolean {
  const entries = Object.entries(sel ?? {});
  if (entries.length === 0) return false;
  return entries.every(([k, v]) => labels?.[k] === v);
}

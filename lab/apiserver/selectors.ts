/**
 * Label and field selectors as the Kubernetes API server accepts them (pure).
 * labelSelector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`, comma-AND.
 * fieldSelector: `path=value`, `path==value`, `path!=value`, comma-AND, on a fixed set of fields.
 */
import type { Obj } from './util.js';

export type LabelRequirement =
  | { key: string; op: 'eq' | 'neq'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'notexists' };

export class SelectorError extends Error {}

/** Split on commas that are not inside parentheses. */
function splitTop(s: string): string[] {
  const out: string[] = [];
  let depth = 0, cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) { out.push(cur); cur = ''; continue; }
    cur += ch;
  }
  if (depth !== 0) throw new SelectorError(`unbalanced parentheses in selector "${s}"`);
  out.push(cur);
  return out.map((x) => x.trim()).filter((x) => x.length > 0);
}

const KEY_RE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?\/)?[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$/;
const VALUE_RE = /^([a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?)?$/;

function checkKey(k: string): string {
  if (!KEY_RE.test(k)) throw new SelectorError(`invalid label key "${k}"`);
  return k;
}
function checkValue(v: string): string {
  if (!VALUE_RE.test(v) || v.length > 63) throw new SelectorError(`invalid label value "${v}"`);
  return v;
}

export function parseLabelSelector(s: string | undefined | null): LabelRequirement[] {
  if (!s || !s.trim()) return [];
  return splitTop(s).map((term): LabelRequirement => {
    let m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
    if (m) {
      const values = m[3]!.split(',').map((v) => checkValue(v.trim()));
      return { key: checkKey(m[1]!), op: m[2] as 'in' | 'notin', values };
    }
    m = /^([^!=\s]+)\s*(==|!=|=)\s*(\S*)$/.exec(term);
    if (m) return { key: checkKey(m[1]!), op: m[2] === '!=' ? 'neq' : 'eq', value: checkValue(m[3]!) };
    m = /^!\s*(\S+)$/.exec(term);
    if (m) return { key: checkKey(m[1]!), op: 'notexists' };
    if (/^\S+$/.test(term)) return { key: checkKey(term), op: 'exists' };
    throw new SelectorError(`unable to parse requirement "${term}"`);
  });
}

export function matchLabels(reqs: LabelRequirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    switch (r.op) {
      case 'eq': return has && l[r.key] === r.value;
      case 'neq': return !has || l[r.key] !== r.value;
      case 'in': return has && r.values.includes(l[r.key]!);
      case 'notin': return !has || !r.values.includes(l[r.key]!);
      case 'exists': return has;
      case 'notexists': return !has;
    }
  });
}

/** A map selector (Service.spec.selector, matchLabels) as requirements. */
export function selectorFromMap(m: Record<string, string> | undefined): LabelRequirement[] {
  return Object.entries(m ?? {}).map(([key, value]) => ({ key, op: 'eq' as const, value }));
}

/** metav1.LabelSelector {matchLabels, matchExpressions} as requirements. */
export function selectorFromLabelSelector(sel: Obj | undefined): LabelRequirement[] {
  const reqs = selectorFromMap(sel?.matchLabels);
  for (const e of (sel?.matchExpressions ?? []) as Obj[]) {
    const op = String(e.operator);
    if (op === 'In') reqs.push({ key: e.key, op: 'in', values: e.values ?? [] });
    else if (op === 'NotIn') reqs.push({ key: e.key, op: 'notin', values: e.values ?? [] });
    else if (op === 'Exists') reqs.push({ key: e.key, op: 'exists' });
    else if (op === 'DoesNotExist') reqs.push({ key: e.key, op: 'notexists' });
  }
  return reqs;
}

export interface FieldRequirement { field: string; op: 'eq' | 'neq'; value: string }

/** Fields every resource supports, plus per-kind ones. */
const FIELD_GETTERS: Record<string, (o: Obj) => string> = {
  'metadata.name': (o) => o.metadata?.name ?? '',
  'metadata.namespace': (o) => o.metadata?.namespace ?? '',
  'spec.nodeName': (o) => o.spec?.nodeName ?? '',
  'status.phase': (o) => o.status?.phase ?? '',
  'spec.schedulerName': (o) => o.spec?.schedulerName ?? '',
  'status.podIP': (o) => o.status?.podIP ?? '',
  'involvedObject.name': (o) => o.involvedObject?.name ?? '',
  'involvedObject.kind': (o) => o.involvedObject?.kind ?? '',
  'involvedObject.uid': (o) => o.involvedObject?.uid ?? '',
  'involvedObject.namespace': (o) => o.involvedObject?.namespace ?? '',
  reason: (o) => o.reason ?? '',
  type: (o) => o.type ?? '',
  'spec.type': (o) => o.spec?.type ?? '',
};

export function parseFieldSelector(s: string | undefined | null): FieldRequirement[] {
  if (!s || !s.trim()) return [];
  return s.split(',').map((t) => t.trim()).filter(Boolean).map((term) => {
    const m = /^([^!=\s]+)\s*(==|!=|=)\s*(.*)$/.exec(term);
    if (!m) throw new SelectorError(`invalid field selector "${term}"`);
    if (!FIELD_GETTERS[m[1]!]) throw new SelectorError(`field label not supported: ${m[1]}`);
    return { field: m[1]!, op: m[2] === '!=' ? 'neq' as const : 'eq' as const, value: m[3]!.trim() };
  });
}

export function matchFields(reqs: FieldRequirement[], o: Obj): boolean {
  return reqs.every((r) => {
    const v = FIELD_GETTERS[r.field]!(o);
    return r.op === 'eq' ? v === r.value : v !== r.value;
  });
}

/**
 * Pure pieces of `rolltrace import --watch`: telling a JSON-lines watch dump ({"type","object","ts"?} per
 * line, as the lab API server and `parseWatchLines` read) from `kubectl get --watch -o json` output (a
 * stream of concatenated pretty-printed objects, no event type, no receipt time), splitting the latter,
 * and an instant for an object from its own metadata when the capture has none.
 */
import { nsFromIso } from '../../schemas/analysis.js';
import { parseJsonBounded } from '../../schemas/json.js';
import type { KubeObject } from '../sources/kube/derive.js';

type J = Record<string, unknown>;
const isObj = (v: unknown): v is J => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface SplitJson { values: unknown[]; bad: number }

/**
 * Split concatenated JSON values (pretty-printed or not). A value that does not parse is skipped and
 * counted; text outside any `{...}` / `[...]` is counted once per stretch.
 */
export function splitConcatenatedJson(text: string): SplitJson {
  const values: unknown[] = [];
  let bad = 0;
  let depth = 0;
  let start = -1;
  let inStr = false;
  let esc = false;
  let junk = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inStr) {
      if (esc) esc = false;
      else if (ch === '\\') esc = true;
      else if (ch === '"') inStr = false;
      continue;
    }
    if (depth === 0) {
      if (ch === '{' || ch === '[') { start = i; depth = 1; junk = false; continue; }
      if (!/\s/.test(ch)) { if (!junk) bad++; junk = true; }
      continue;
    }
    if (ch === '"') inStr = true;
    else if (ch === '{' || ch === '[') depth++;
    else if (ch === '}' || ch === ']') {
      depth--;
      if (depth === 0) {
        const j = parseJsonBounded(text.slice(start, i + 1));
        if (j.ok) values.push(j.v); else bad++;
        start = -1;
      }
    }
  }
  if (depth > 0) bad++; // truncated last value
  return { values, bad };
}

function isoNs(s: unknown): number | null {
  return typeof s === 'string' ? nsFromIso(s) : null;
}

/**
 * The latest instant an object's own fields record: managedFields times, creation, the deletion
 * request (deletionTimestamp minus the grace period), condition transitions, EndpointSlice trigger
 * time. Second precision at best; null when the object carries none.
 */
export function objectInstantNs(o: KubeObject): number | null {
  const md = (o.metadata ?? {}) as J;
  const cands: Array<number | null> = [isoNs(md.creationTimestamp)];
  if (Array.isArray(md.managedFields)) for (const f of md.managedFields) if (isObj(f)) cands.push(isoNs(f.time));
  const del = isoNs(md.deletionTimestamp);
  if (del !== null) cands.push(del - (typeof md.deletionGracePeriodSeconds === 'number' ? md.deletionGracePeriodSeconds : 0) * 1e9);
  const ann = isObj(md.annotations) ? md.annotations : {};
  cands.push(isoNs(ann['endpoints.kubernetes.io/last-change-trigger-time']));
  const status = isObj(o.status) ? o.status : {};
  if (Array.isArray(status.conditions)) {
    for (const c of status.conditions) if (isObj(c)) { cands.push(isoNs(c.lastTransitionTime)); cands.push(isoNs(c.lastUpdateTime)); }
  }
  const ok = cands.filter((c): c is number => c !== null);
  return ok.length ? Math.max(...ok) : null;
}

/** A watch `ts` given as seconds, ms, µs or ns since the epoch -> ns. */
export function normalizeEpoch(ts: number): number {
  if (ts < 1e11) return ts * 1e9;
  if (ts < 1e14) return ts * 1e6;
  if (ts < 1e17) return ts * 1e3;
  return ts;
}

export interface PlainObjectEvent { type: 'ADDED' | 'MODIFIED'; object: KubeObject; ts: number | null }

/**
 * `kubectl get --watch -o json` values -> watch events: each object is ADDED the first time its
 * kind/namespace/name is seen, MODIFIED after; a List is expanded; {"type","object"} values
 * (`--output-watch-events`) keep their type. Non-objects are counted as bad.
 */
export function plainObjectsToEvents(values: unknown[]): { events: Array<{ type: string; object: KubeObject; ts: number | null }>; bad: number } {
  const seen = new Set<string>();
  const events: Array<{ type: string; object: KubeObject; ts: number | null }> = [];
  let bad = 0;
  const one = (v: unknown, kindHint?: string): void => {
    if (!isObj(v)) { bad++; return; }
    if (typeof v.type === 'string' && isObj(v.object)) {
      const o = v.object as KubeObject;
      events.push({ type: v.type, object: o, ts: objectInstantNs(o) });
      return;
    }
    if (Array.isArray(v.items) && typeof v.kind === 'string' && v.kind.endsWith('List')) {
      const itemKind = v.kind === 'List' ? undefined : v.kind.slice(0, -4);
      for (const it of v.items) one(it, itemKind);
      return;
    }
    const o = v as KubeObject;
    if (!isObj(o.metadata)) { bad++; return; }
    if (!o.kind && kindHint) o.kind = kindHint;
    const key = `${o.kind ?? ''}/${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
    const type = seen.has(key) ? 'MODIFIED' : 'ADDED';
    seen.add(key);
    events.push({ type, object: o, ts: objectInstantNs(o) });
  };
  for (const v of values) one(v);
  return { events, bad };
}

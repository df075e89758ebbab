/**
 * The three patch types the API server accepts (pure):
 * - application/merge-patch+json (RFC 7386)
 * - application/strategic-merge-patch+json (merge with list merge keys of the core types, $patch directives)
 * - application/json-patch+json (RFC 6902)
 */
import { clone, deepEqual, type Obj } from './util.js';

export class PatchError extends Error {}

export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Obj = target !== null && typeof target === 'object' && !Array.isArray(target) ? clone(target as Obj) : {};
  for (const [k, v] of Object.entries(patch as Obj)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** List field name -> merge key, for the fields of the types the lab serves (from the API's patchMergeKey tags). */
function mergeKeyFor(field: string, items: Obj[]): string | undefined {
  switch (field) {
    case 'containers': case 'initContainers': case 'ephemeralContainers': case 'env': case 'volumes':
    case 'imagePullSecrets': case 'hostAliases':
      return field === 'hostAliases' ? 'ip' : 'name';
    case 'volumeMounts': return 'mountPath';
    case 'volumeDevices': return 'devicePath';
    case 'conditions': return 'type';
    case 'ownerReferences': return 'uid';
    case 'ports': // container ports merge on containerPort, service ports on port
      return items.some((i) => i && typeof i === 'object' && 'containerPort' in i) ? 'containerPort' : 'port';
    case 'tolerations': case 'topologySpreadConstraints': return undefined;
    default: return undefined;
  }
}

const PRIMITIVE_MERGE_LISTS = new Set(['finalizers']);

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isObj(patch)) return clone(patch);
  const p = patch as Obj;
  if (p.$patch === 'replace') {
    const r = clone(p); delete r.$patch; return r;
  }
  if (p.$patch === 'delete') return undefined;
  const out: Obj = isObj(target) ? clone(target) : {};
  for (const [k, v] of Object.entries(p)) {
    if (k === '$patch' || k === '$retainKeys') continue;
    if (k.startsWith('$setElementOrder/')) continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      if (Array.isArray(out[field]) && Array.isArray(v)) out[field] = (out[field] as unknown[]).filter((x) => !v.some((d) => deepEqual(d, x)));
      continue;
    }
    if (v === null) { delete out[k]; continue; }
    if (Array.isArray(v)) {
      const cur = out[k];
      const key = mergeKeyFor(k, v as Obj[]);
      if (key && Array.isArray(cur) && (v as unknown[]).every(isObj)) {
        if ((v as Obj[]).some((i) => i.$patch === 'replace')) {
          out[k] = clone((v as Obj[]).filter((i) => i.$patch !== 'replace'));
          continue;
        }
        const res: Obj[] = clone(cur as Obj[]);
        for (const item of v as Obj[]) {
          const idx = res.findIndex((x) => isObj(x) && deepEqual(x[key], item[key]));
          if (item.$patch === 'delete') { if (idx >= 0) res.splice(idx, 1); continue; }
          if (idx >= 0) res[idx] = strategicMergePatch(res[idx], item) as Obj;
          else res.push(strategicMergePatch(undefined, item) as Obj);
        }
        out[k] = res;
        continue;
      }
      if (PRIMITIVE_MERGE_LISTS.has(k) && Array.isArray(cur)) {
        const res = clone(cur as unknown[]);
        for (const x of v as unknown[]) if (!res.some((y) => deepEqual(x, y))) res.push(x);
        out[k] = res;
        continue;
      }
      out[k] = clone(v);
      continue;
    }
    const merged = strategicMergePatch(out[k], v);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  return out;
}

// ------------------------------------------------------------------------------ RFC 6902 JSON patch

function parsePointer(ptr: string): string[] {
  if (ptr === '') return [];
  if (!ptr.startsWith('/')) throw new PatchError(`invalid JSON pointer "${ptr}"`);
  return ptr.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function resolveParent(doc: unknown, tokens: string[]): { parent: Obj | unknown[]; key: string } {
  let cur: unknown = doc;
  for (const t of tokens.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[Number(t)];
    else if (isObj(cur)) cur = cur[t];
    else cur = undefined;
    if (cur === undefined) throw new PatchError(`path not found: /${tokens.join('/')}`);
  }
  if (!Array.isArray(cur) && !isObj(cur)) throw new PatchError(`path not found: /${tokens.join('/')}`);
  return { parent: cur as Obj | unknown[], key: tokens[tokens.length - 1]! };
}

function getAt(doc: unknown, ptr: string): unknown {
  let cur: unknown = doc;
  for (const t of parsePointer(ptr)) {
    if (Array.isArray(cur)) cur = cur[Number(t)];
    else if (isObj(cur)) cur = cur[t];
    else cur = undefined;
    if (cur === undefined) throw new PatchError(`path not found: ${ptr}`);
  }
  return cur;
}

function arrayIndex(arr: unknown[], key: string, forAdd: boolean): number {
  if (forAdd && key === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(key)) throw new PatchError(`invalid array index "${key}"`);
  const i = Number(key);
  if (i > arr.length || (!forAdd && i >= arr.length)) throw new PatchError(`array index out of range: ${key}`);
  return i;
}

function addAt(doc: unknown, ptr: string, value: unknown): unknown {
  const tokens = parsePointer(ptr);
  if (tokens.length === 0) return clone(value);
  const { parent, key } = resolveParent(doc, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, true), 0, clone(value));
  else parent[key] = clone(value);
  return doc;
}

function removeAt(doc: unknown, ptr: string): unknown {
  const tokens = parsePointer(ptr);
  if (tokens.length === 0) throw new PatchError('cannot remove the whole document');
  const { parent, key } = resolveParent(doc, tokens);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, key, false), 1);
  else {
    if (!(key in parent)) throw new PatchError(`path not found: ${ptr}`);
    delete parent[key];
  }
  return doc;
}

export function jsonPatch(target: unknown, ops: unknown): unknown {
  if (!Array.isArray(ops)) throw new PatchError('a JSON patch must be an array of operations');
  let doc = clone(target);
  for (const op of ops as Obj[]) {
    if (!isObj(op) || typeof op.op !== 'string' || typeof op.path !== 'string') throw new PatchError('invalid JSON patch operation');
    switch (op.op) {
      case 'add': doc = addAt(doc, op.path, op.value); break;
      case 'remove': doc = removeAt(doc, op.path); break;
      case 'replace': getAt(doc, op.path); doc = removeAt(doc, op.path); doc = addAt(doc, op.path, op.value); break;
      case 'move': { const v = clone(getAt(doc, op.from)); doc = removeAt(doc, op.from); doc = addAt(doc, op.path, v); break; }
      case 'copy': doc = addAt(doc, op.path, getAt(doc, op.from)); break;
      case 'test':
        if (!deepEqual(getAt(doc, op.path), op.value)) throw new PatchError(`test operation failed at ${op.path}`);
        break;
      default: throw new PatchError(`unknown JSON patch op "${op.op}"`);
    }
  }
  return doc;
}

export type PatchType = 'merge' | 'strategic' | 'json';

export function patchTypeOf(contentType: string | undefined): PatchType | undefined {
  const ct = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (ct === 'application/merge-patch+json') return 'merge';
  if (ct === 'application/strategic-merge-patch+json') return 'strategic';
  if (ct === 'application/json-patch+json') return 'json';
  return undefined;
}

export function applyPatch(type: PatchType, target: Obj, patch: unknown): Obj {
  const out = type === 'merge' ? mergePatch(target, patch) : type === 'strategic' ? strategicMergePatch(target, patch) : jsonPatch(target, patch);
  if (!isObj(out)) throw new PatchError('patch result is not an object');
  return out;
}

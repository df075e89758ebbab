/**
 * JSON from untrusted input (bundle columns, imported captures) with a bound on nesting depth.
 * V8's JSON.parse accepts any depth but costs ~50 bytes per open level (50 MB of `[` took 2.8 GB), and
 * every recursive walk afterwards (JSON.stringify, redaction, matching) overflows the stack past a few
 * thousand levels. Real documents (Kubernetes objects, nft rulesets, event attrs) nest < 40 deep.
 */
export const MAX_JSON_DEPTH = 512;

/** True when `text` opens more than `max` nested arrays/objects (strings are skipped; O(n), no allocation). */
export function jsonTooDeep(text: string, max = MAX_JSON_DEPTH): boolean {
  if (text.length <= max) return false;
  let depth = 0;
  let inStr = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inStr) {
      if (c === 0x5c) i++; // backslash: skip the escaped char
      else if (c === 0x22) inStr = false;
    } else if (c === 0x22) inStr = true;
    else if (c === 0x5b || c === 0x7b) { if (++depth > max) return true; }
    else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

export type BoundedJson = { ok: true; v: unknown } | { ok: false; why: 'not-json' | 'too-deep' };

/** JSON.parse that refuses text nested deeper than `max` before parsing it. */
export function parseJsonBounded(text: unknown, max = MAX_JSON_DEPTH): BoundedJson {
  if (typeof text !== 'string') return { ok: false, why: 'not-json' };
  if (jsonTooDeep(text, max)) return { ok: false, why: 'too-deep' };
  try {
    return { ok: true, v: JSON.parse(text) as unknown };
  } catch {
    return { ok: false, why: 'not-json' };
  }
}

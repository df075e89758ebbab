/** Small pure helpers shared by the analyzer models and renderers. */
import { isoFromNs } from '../schemas/analysis.js';
import { parseJsonBounded } from '../schemas/json.js';

/** Replace control characters (C0, DEL, C1, bidi overrides) so bundle strings cannot drive a terminal. */
export function clean(s: unknown, max = 300): string {
  const t0 = typeof s === 'string' ? s : s === null || s === undefined ? '' : String(s);
  // cut first: a bundle string may be 40 MB
  const t = t0.length > max ? t0.slice(0, max + 1) : t0;
  // eslint-disable-next-line no-control-regex
  const r = t.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, '?');
  return r.length > max ? `${r.slice(0, max)}…` : r;
}

/** A finite, plausible epoch-ns number or null (negative, NaN, beyond year 9999 → null). */
export function sane(ns: unknown): number | null {
  const n = typeof ns === 'bigint' ? Number(ns) : typeof ns === 'number' ? ns : typeof ns === 'string' && ns.trim() !== '' ? Number(ns) : NaN;
  if (!Number.isFinite(n) || n < 0 || n > 253402300799e9) return null;
  return n;
}

export function iso(ns: number | null | undefined): string | null {
  return ns === null || ns === undefined ? null : isoFromNs(ns);
}

export function ms(ns: number): number {
  return Math.round(ns / 1e3) / 1e3;
}

export function parseJson(text: unknown): { ok: true; v: Record<string, unknown> } | { ok: false } {
  // bounded depth: a bundle's JSON is untrusted, and every later walk of it (stringify, match) recurses
  const j = parseJsonBounded(text);
  if (j.ok && j.v && typeof j.v === 'object' && !Array.isArray(j.v)) return { ok: true, v: j.v as Record<string, unknown> };
  return { ok: false };
}

export function str(v: unknown): string | null {
  return typeof v === 'string' && v.length > 0 ? v : null;
}
export function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** Split "ip:port" / "[v6]:port" → {ip, port}; a bare IP gives port null. */
export function splitAddr(s: string | null | undefined): { ip: string; port: number | null } | null {
  if (!s) return null;
  const t = s.trim();
  const m6 = /^\[([^\]]+)\]:(\d+)$/.exec(t);
  if (m6) return { ip: m6[1]!, port: Number(m6[2]) };
  const m4 = /^([0-9.]+):(\d+)$/.exec(t);
  if (m4) return { ip: m4[1]!, port: Number(m4[2]) };
  const mUrl = /^[a-z]+:\/\/([^/:]+|\[[^\]]+\])(?::(\d+))?/i.exec(t);
  if (mUrl) return { ip: mUrl[1]!.replace(/^\[|\]$/g, ''), port: mUrl[2] ? Number(mUrl[2]) : null };
  if (/^[0-9.]+$/.test(t) || /^[0-9a-f:]+$/i.test(t)) return { ip: t, port: null };
  return null;
}

export function joinAddr(ip: string | null | undefined, port: number | null | undefined): string {
  const i = ip ?? '?';
  const p = port === null || port === undefined ? '?' : String(port);
  return i.includes(':') ? `[${i}]:${p}` : `${i}:${p}`;
}

/** Relative seconds "+12.825s" from a start instant. */
export function rel(ns: number, startNs: number): string {
  const d = (ns - startNs) / 1e9;
  const sign = d < 0 ? '-' : '+';
  return `${sign}${Math.abs(d).toFixed(3)}s`;
}

/**
 * Strings longer than `max` cut (with "…") anywhere in a plain JSON-like value, in place; for exports
 * that copy bundle strings (a damaged bundle may hold 40 MB in one column). Depth is bounded by the
 * JSON depth bound of schemas/json.ts; deeper values are left alone.
 */
export function capStrings<T>(v: T, max = 4096, depth = 0): T {
  if (typeof v === 'string') return (v.length > max ? `${v.slice(0, max)}…` : v) as T;
  if (depth > 600 || v === null || typeof v !== 'object') return v;
  if (Array.isArray(v)) { for (let i = 0; i < v.length; i++) v[i] = capStrings(v[i], max, depth + 1); return v; }
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) o[k] = capStrings(o[k], max, depth + 1);
  return v;
}

/**
 * The probe's pure parts: URL parsing, the request schedule, local port rotation and the
 * classification of a failed request into the bundle's error codes.
 */
import { isIP } from 'node:net';
import { InputError } from '../../../schemas/errors.js';

export interface ProbeTarget {
  protocol: 'http:' | 'https:';
  host: string;
  port: number;
  path: string;
  /** Host header */
  hostHeader: string;
}

export function parseProbeUrl(url: string): ProbeTarget {
  let u: URL;
  try { u = new URL(url); } catch { throw new InputError(`--probe ${JSON.stringify(url)} is not a URL (want http://HOST[:PORT]/PATH)`); }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new InputError(`--probe ${url}: only http:// and https:// are supported`);
  const port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return { protocol: u.protocol, host, port, path: (u.pathname || '/') + u.search, hostHeader: u.host };
}

export function formatAddr(ip: string, port: number): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Due time (ms since the schedule start) of slot i at `rate` Hz: a fixed schedule, never shifted by slow requests. */
export function slotDueMs(i: number, rate: number): number {
  return (i * 1000) / rate;
}

/**
 * Local ports the probe binds explicitly, so a refused connection (which Node reports without its
 * ephemeral port) still joins its SYN/RST packets and conntrack entry. The range lies below Linux's
 * default ephemeral range (32768-60999), so the kernel's own choices never collide with it.
 */
export class PortRotator {
  private next: number;
  constructor(readonly lo = 20000, readonly hi = 29999, start?: number) {
    this.next = start ?? lo + Math.floor(Math.random() * (hi - lo + 1));
  }
  take(inUse: Set<number>): number {
    const span = this.hi - this.lo + 1;
    for (let i = 0; i < span; i++) {
      const p = this.next;
      this.next = p >= this.hi ? this.lo : p + 1;
      if (!inUse.has(p)) return p;
    }
    throw new Error('no free local port in the probe range');
  }
}

export type ProbeError = 'ECONNREFUSED' | 'ECONNRESET' | 'EOF' | 'ETIMEDOUT' | 'EHOSTUNREACH' | 'ENETUNREACH' | 'EPIPE' | string;

/**
 * Name a failed request: RST -> ECONNRESET, FIN before any response ("socket hang up" without a
 * syscall) -> EOF, our own per-request timer -> ETIMEDOUT (outcome timeout), else the errno code.
 */
export function classifyError(err: unknown, timedOut: boolean): { outcome: 'error' | 'timeout'; error: ProbeError } {
  if (timedOut) return { outcome: 'timeout', error: 'ETIMEDOUT' };
  const e = err as { code?: string; syscall?: string; message?: string } | null;
  const code = e?.code;
  if (code === 'ECONNRESET' && !e?.syscall && /socket hang up/i.test(e?.message ?? '')) return { outcome: 'error', error: 'EOF' };
  if (code === 'HPE_INVALID_CONSTANT' || code?.startsWith('HPE_')) return { outcome: 'error', error: code };
  if (code === 'ETIMEDOUT') return { outcome: 'timeout', error: 'ETIMEDOUT' };
  if (code) return { outcome: 'error', error: code };
  return { outcome: 'error', error: (e?.message ?? String(err)).slice(0, 80) };
}

/** Errors that mean the local port could not be used (no packet left the host): pick another and retry. */
export function isLocalBindError(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === 'EADDRINUSE' || code === 'EADDRNOTAVAIL';
}

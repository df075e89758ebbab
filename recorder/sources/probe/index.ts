/**
 * probe source: `--probe URL --rate HZ [--concurrency N] [--keepalive]` — the curl loop people write by
 * hand during a rollout, recorded. One probe_requests row per request: start/end (realtime ns from the
 * monotonic clock), the local address and the explicitly bound local port (so even a refused
 * connection joins its packets and conntrack entry), the remote ip:port, outcome, status, error.
 * Requests follow a fixed schedule (slot i is due at i/rate s); when N requests are already in flight
 * a slot is skipped and counted as dropped, so a slow request never shifts the rest.
 */
import { nowNs } from '../../clock.js';
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import http from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import type { ProbeRequestRow } from '../../../schemas/rows.js';
import { classifyError, formatAddr, isLocalBindError, parseProbeUrl, PortRotator, slotDueMs, type ProbeTarget } from './probe.js';


/** The source address the kernel would pick for `ip` (UDP connect sends nothing). */
export async function sourceAddressFor(ip: string, port: number): Promise<string | null> {
  const sock = dgram.createSocket(isIP(ip) === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(port, ip, () => resolve());
    });
    return sock.address().address;
  } catch {
    return null;
  } finally {
    sock.close();
  }
}

export interface ProbeSettings {
  url: string;
  rate: number;
  concurrency: number;
  keepalive: boolean;
  timeoutMs: number;
  portRange?: [number, number];
}

/** The probe loop, usable on its own (tests, bench). */
export class Prober {
  private target: ProbeTarget;
  ip = '';
  localAddr: string | null = null;
  private rot: PortRotator;
  private inUse = new Set<number>();
  private inflight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  private slot = 0;
  private t0 = 0;
  private agent: http.Agent | undefined;
  ok = 0;
  failed = 0;
  skipped = 0;

  constructor(private s: ProbeSettings, private onRow: (r: ProbeRequestRow) => void) {
    this.target = parseProbeUrl(s.url);
    this.rot = new PortRotator(s.portRange?.[0], s.portRange?.[1]);
  }

  get remote(): string { return formatAddr(this.ip, this.target.port); }

  async resolve(): Promise<void> {
    this.ip = isIP(this.target.host) ? this.target.host : (await lookup(this.target.host)).address;
    this.localAddr = await sourceAddressFor(this.ip, this.target.port);
  }

  start(): void {
    const mod = this.target.protocol === 'https:' ? https : http;
    if (this.s.keepalive) {
      this.agent = new mod.Agent({ keepAlive: true, maxSockets: this.s.concurrency, ...(this.target.protocol === 'https:' ? { rejectUnauthorized: false } : {}) });
    }
    this.t0 = performance.now();
    this.tick();
  }

  private tick = (): void => {
    if (this.stopped) return;
    const now = performance.now() - this.t0;
    while (slotDueMs(this.slot, this.s.rate) <= now) {
      if (this.inflight.size < this.s.concurrency) {
        const p = this.one().finally(() => this.inflight.delete(p));
        this.inflight.add(p);
      } else {
        this.skipped++;
      }
      this.slot++;
    }
    const wait = Math.max(0, slotDueMs(this.slot, this.s.rate) - (performance.now() - this.t0));
    this.timer = setTimeout(this.tick, wait);
  };

  private async one(): Promise<void> {
    const start_ns = nowNs();
    let attempt = 0;
    for (;;) {
      const r = await this.attempt(start_ns);
      if (r.retry && attempt++ < 5) continue;
      this.onRow(r.row);
      if (r.row.outcome === 'ok') this.ok++; else this.failed++;
      return;
    }
  }

  private attempt(start_ns: number): Promise<{ row: ProbeRequestRow; retry: boolean }> {
    const t = this.target;
    const mod = t.protocol === 'https:' ? https : http;
    const port = this.rot.take(this.inUse);
    this.inUse.add(port);
    return new Promise((resolve) => {
      let done = false;
      let timedOut = false;
      let responded = false;
      let localAddr: string | null = this.localAddr;
      let localPort: number | null = port;
      let status: number | null = null;
      const req = mod.request({
        host: this.ip, port: t.port, path: t.path, method: 'GET',
        headers: { Host: t.hostHeader, 'User-Agent': 'rolltrace-probe', Connection: this.s.keepalive ? 'keep-alive' : 'close' },
        agent: this.agent ?? false,
        ...(this.localAddr ? { localAddress: this.localAddr } : {}),
        localPort: port,
        ...(t.protocol === 'https:' ? { rejectUnauthorized: false } : {}),
      } as http.RequestOptions);
      const timer = setTimeout(() => { timedOut = true; req.destroy(); }, this.s.timeoutMs);
      const finish = (outcome: ProbeRequestRow['outcome'], error: string | null, retry = false) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.inUse.delete(port);
        resolve({
          retry,
          row: { start_ns, end_ns: nowNs(), local_addr: localAddr, local_port: localPort, remote: this.remote, outcome, status, error },
        });
      };
      req.on('socket', (s) => {
        const note = () => {
          if (s.localPort) localPort = s.localPort;
          if (s.localAddress) localAddr = s.localAddress;
        };
        if (s.localPort) note(); else s.once('connect', note);
      });
      req.on('response', (res) => {
        responded = true;
        status = res.statusCode ?? null;
        res.on('data', () => undefined);
        res.on('end', () => finish('ok', null));
        res.on('error', (e) => { const c = classifyError(e, timedOut); finish(c.outcome, c.error); });
        res.on('aborted', () => { const c = classifyError(null, timedOut); finish(c.outcome, timedOut ? c.error : 'ECONNRESET'); });
      });
      req.on('error', (e) => {
        if (!responded && isLocalBindError(e) && !timedOut) { finish('error', (e as { code?: string }).code ?? 'EADDRINUSE', true); return; }
        const c = classifyError(e, timedOut);
        finish(c.outcome, c.error);
      });
      req.end();
    });
  }

  /** Stop scheduling; wait for the requests in flight (each bounded by the per-request timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await Promise.all([...this.inflight]);
    this.agent?.destroy();
  }
}

class ProbeSource implements Source {
  readonly name = 'probe';
  private prober: Prober | null = null;
  private sink: Sink | null = null;
  private reported = 0;

  constructor(private opts: RecordOptions) {}

  async preflight(): Promise<Preflight> {
    const clock = 'receipt' as const;
    const o = this.opts;
    if (!o.probe) return { ok: false, clock, detail: 'no --probe URL given' };
    if (!(o.rate > 0)) return { ok: false, clock, detail: '--rate must be above 0' };
    try {
      this.prober = new Prober({
        url: o.probe, rate: o.rate, concurrency: Math.max(1, Math.floor(o.concurrency || 1)), keepalive: !!o.keepalive, timeoutMs: 1000,
      }, (r) => this.sink?.probeRequest(r));
      await this.prober.resolve();
    } catch (e) {
      return { ok: false, clock, detail: `cannot probe ${o.probe}: ${(e as Error).message}` };
    }
    const p = this.prober;
    return {
      ok: true, clock,
      detail: `GET ${o.probe} -> ${p.remote} at ${o.rate} Hz, concurrency ${Math.max(1, o.concurrency || 1)}, ${o.keepalive ? 'keep-alive' : 'new connection per request'}, timeout 1 s, from ${p.localAddr ?? 'kernel-chosen address'} ports 20000-29999`,
    };
  }

  async start(sink: Sink, _ctx: RecordContext): Promise<void> {
    this.sink = sink;
    if (!this.prober) {
      const pf = await this.preflight();
      if (!pf.ok) throw new Error(pf.detail);
    }
    this.prober!.start();
  }

  async stop(): Promise<void> {
    await this.prober?.stop();
    const skipped = this.prober?.skipped ?? 0;
    if (skipped > this.reported) { this.sink?.dropped('probe', skipped - this.reported); this.reported = skipped; }
  }

  stats(): SourceStats {
    const p = this.prober;
    return { events: (p?.ok ?? 0) + (p?.failed ?? 0), dropped: p?.skipped ?? 0, extra: `ok ${p?.ok ?? 0} / failed ${p?.failed ?? 0}` };
  }
}

export function create(opts: RecordOptions): Source {
  return new ProbeSource(opts);
}

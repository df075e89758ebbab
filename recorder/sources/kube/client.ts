/**
 * A small raw Kubernetes API client on top of @kubernetes/client-node's KubeConfig (auth, TLS,
 * in-cluster): GET/PATCH JSON, paginated LIST, and a raw WATCH stream delivering each line as it
 * arrives (no informer cache). `WatchLoop` runs LIST then WATCH from the list's resourceVersion,
 * reconnects from the last resourceVersion on a dropped stream and relists on 410 Gone.
 */
import http from 'node:http';
import https from 'node:https';
import { KubeConfig } from '@kubernetes/client-node';
import { InputError } from '../../../schemas/errors.js';
import type { KubeObject } from './derive.js';

import { nowNs } from '../../clock.js';

export { nowNs };

export class ApiError extends Error {
  /** the response body (a metav1.Status as JSON, when the API server sent one) */
  body?: unknown;
  constructor(readonly status: number, message: string, readonly reason?: string) {
    super(message);
    this.name = 'ApiError';
  }
}

export function loadKubeConfig(path?: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (path) kc.loadFromFile(path);
    else kc.loadFromDefault();
  } catch (e) {
    throw new InputError(`cannot load kubeconfig${path ? ` ${path}` : ''}: ${(e as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new InputError(`kubeconfig${path ? ` ${path}` : ''} has no current cluster`);
  return kc;
}

interface ReqBase {
  agent?: http.Agent;
  headers: Record<string, string>;
  auth?: string;
}

export class KubeClient {
  readonly server: string;
  private base: Promise<ReqBase>;
  private active = new Set<http.ClientRequest>();

  constructor(readonly kc: KubeConfig) {
    const cluster = kc.getCurrentCluster()!;
    const server = cluster.server.replace(/\/+$/, '');
    this.server = server;
    this.base = (async () => {
      const opts: https.RequestOptions = {};
      try {
        await kc.applyToHTTPSOptions(opts);
      } catch (e) {
        // plain http without insecure-skip-tls-verify: client-node refuses; talk http with the headers anyway
        if (!server.startsWith('http:')) throw e;
        const o2: https.RequestOptions = {};
        await (kc as unknown as { applyOptions(o: https.RequestOptions): Promise<void> }).applyOptions(o2);
        Object.assign(opts, o2, { agent: undefined });
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(opts.headers ?? {})) if (v !== undefined) headers[k] = String(v);
      return { agent: opts.agent as http.Agent | undefined, headers, auth: opts.auth ?? undefined };
    })();
    this.base.catch(() => { /* reported by the first request */ });
  }

  private async open(method: string, path: string, body?: string, contentType?: string): Promise<{ req: http.ClientRequest; res: Promise<http.IncomingMessage> }> {
    const b = await this.base;
    const url = new URL(this.server + path);
    const mod = url.protocol === 'https:' ? https : http;
    const headers: Record<string, string> = { Accept: 'application/json', ...b.headers };
    if (body !== undefined) {
      headers['Content-Type'] = contentType ?? 'application/json';
      headers['Content-Length'] = String(Buffer.byteLength(body));
    }
    const req = mod.request(url, { method, agent: b.agent, headers, auth: b.auth });
    this.active.add(req);
    req.on('close', () => this.active.delete(req));
    const res = new Promise<http.IncomingMessage>((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
    });
    req.end(body);
    return { req, res };
  }

  /** A JSON request; non-2xx -> ApiError with the Status message. */
  async request<T = KubeObject>(method: string, path: string, body?: unknown, contentType?: string, timeoutMs = 15000): Promise<T> {
    const { text } = await this.requestText(method, path, body, contentType, timeoutMs);
    try { return (text ? JSON.parse(text) : null) as T; } catch { return null as T; }
  }

  /** A request whose 2xx answer is text (pod logs); non-2xx -> ApiError with the Status message and body. */
  async requestText(method: string, path: string, body?: unknown, contentType?: string, timeoutMs = 15000): Promise<{ status: number; text: string }> {
    const { req, res } = await this.open(method, path, body === undefined ? undefined : JSON.stringify(body), contentType);
    const timer = setTimeout(() => req.destroy(new Error(`timeout after ${timeoutMs} ms`)), timeoutMs);
    try {
      const r = await res;
      const chunks: Buffer[] = [];
      for await (const c of r) chunks.push(c as Buffer);
      const text = Buffer.concat(chunks).toString('utf8');
      const status = r.statusCode ?? 0;
      if (status < 200 || status > 299) {
        let json: unknown = null;
        try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
        const st = json as { message?: string; reason?: string } | null;
        const err = new ApiError(status, `${method} ${path}: HTTP ${status}${st?.message ? `: ${st.message}` : ''}`, st?.reason);
        err.body = json ?? text;
        throw err;
      }
      return { status, text };
    } finally {
      clearTimeout(timer);
    }
  }

  /** LIST with pagination; items get kind/apiVersion filled in. */
  async list(path: string, query: Record<string, string>, kind: string, apiVersion: string): Promise<{ items: KubeObject[]; resourceVersion: string }> {
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      const q = new URLSearchParams({ ...query, limit: '500', ...(cont ? { continue: cont } : {}) });
      const r = await this.request<{ items?: KubeObject[]; metadata?: { resourceVersion?: string; continue?: string } }>('GET', `${path}?${q}`);
      for (const it of r.items ?? []) items.push({ kind, apiVersion, ...it });
      rv = r.metadata?.resourceVersion ?? rv;
      cont = r.metadata?.continue || undefined;
    } while (cont);
    return { items, resourceVersion: rv };
  }

  /**
   * One WATCH stream. Calls onEvent for each parsed line (with the receive time) and resolves when the
   * stream ends: 'closed' (server or network ended it), 'gone' (HTTP 410 or an ERROR 410 event),
   * 'aborted' (abort() called). Rejects on an HTTP error other than 410 before the stream starts.
   */
  watch(path: string, query: Record<string, string>, onEvent: (w: { type: string; object: KubeObject }, ts: number, raw: string) => void, onBadLine?: (line: string) => void): { done: Promise<'closed' | 'gone' | 'aborted'>; abort(): void } {
    let aborted = false;
    let reqRef: http.ClientRequest | null = null;
    const done = (async (): Promise<'closed' | 'gone' | 'aborted'> => {
      const q = new URLSearchParams({ ...query, watch: '1', allowWatchBookmarks: 'true' });
      const { req, res } = await this.open('GET', `${path}?${q}`);
      reqRef = req;
      if (aborted) { req.destroy(); return 'aborted'; }
      let r: http.IncomingMessage;
      try {
        r = await res;
      } catch (e) {
        if (aborted) return 'aborted';
        throw e;
      }
      if (r.statusCode === 410) { r.resume(); return 'gone'; }
      if ((r.statusCode ?? 0) < 200 || (r.statusCode ?? 0) > 299) {
        const chunks: Buffer[] = [];
        for await (const c of r) chunks.push(c as Buffer);
        throw new ApiError(r.statusCode ?? 0, `watch ${path}: HTTP ${r.statusCode} ${Buffer.concat(chunks).toString('utf8').slice(0, 200)}`);
      }
      return await new Promise<'closed' | 'gone' | 'aborted'>((resolve) => {
        let buf = '';
        let result: 'closed' | 'gone' | null = null;
        const finish = () => resolve(aborted ? 'aborted' : (result ?? 'closed'));
        r.setEncoding('utf8');
        r.on('data', (chunk: string) => {
          const ts = nowNs();
          buf += chunk;
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i).trim();
            buf = buf.slice(i + 1);
            if (!line) continue;
            let w: { type?: string; object?: KubeObject };
            try { w = JSON.parse(line); } catch { onBadLine?.(line); continue; }
            if (!w || typeof w.type !== 'string' || !w.object) { onBadLine?.(line); continue; }
            if (w.type === 'ERROR') {
              const code = (w.object as { code?: number }).code;
              if (code === 410) { result = 'gone'; req.destroy(); return; }
            }
            onEvent(w as { type: string; object: KubeObject }, ts, line);
          }
        });
        r.on('end', finish);
        r.on('close', finish);
        r.on('error', finish);
        req.on('error', finish);
      });
    })();
    return {
      done,
      abort() { aborted = true; reqRef?.destroy(); },
    };
  }

  /** Abort every request in flight. */
  closeAll(): void {
    for (const r of this.active) r.destroy();
    this.active.clear();
  }
}

export interface ResourceSpec {
  kind: string;
  apiVersion: string;
  /** e.g. /api/v1/namespaces/default/pods */
  path: string;
  query: Record<string, string>;
}

export interface WatchLoopHandlers {
  /** each list item (type LIST or RELIST) and each watch event, in receive order */
  onObject(type: string, obj: KubeObject, ts: number): void;
  /** a relist finished: the objects it returned */
  onRelistDone?(items: KubeObject[], ts: number): void;
  onReconnect?(reason: string, rv: string, ts: number): void;
  onRelist?(reason: string, rv: string, ts: number): void;
  onBadLine?(line: string): void;
  onError?(e: Error): void;
}

/** LIST, then WATCH from its resourceVersion forever: reconnect from the last RV, relist on 410. */
export class WatchLoop {
  private stopped = false;
  private current: { abort(): void } | null = null;
  private sleepTimer: NodeJS.Timeout | null = null;
  private wake: (() => void) | null = null;
  rv = '';
  done: Promise<void> = Promise.resolve();

  constructor(private client: KubeClient, readonly spec: ResourceSpec, private h: WatchLoopHandlers) {}

  /** Run the initial LIST (awaited, so errors surface to start()), then loop in the background. */
  async start(): Promise<void> {
    await this.doList('LIST');
    this.done = this.loop();
  }

  private async doList(type: 'LIST' | 'RELIST'): Promise<void> {
    const { items, resourceVersion } = await this.client.list(this.spec.path, this.spec.query, this.spec.kind, this.spec.apiVersion);
    const ts = nowNs();
    for (const it of items) this.h.onObject(type, it, ts);
    if (type === 'RELIST') this.h.onRelistDone?.(items, ts);
    this.rv = resourceVersion;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopped) {
      let outcome: 'closed' | 'gone' | 'aborted' | 'error';
      let why = 'stream closed';
      try {
        const w = this.client.watch(this.spec.path, { ...this.spec.query, resourceVersion: this.rv }, (ev, ts) => {
          const rv = ev.object?.metadata?.resourceVersion;
          if (rv) this.rv = rv;
          this.h.onObject(ev.type, ev.object, ts);
        }, this.h.onBadLine);
        this.current = w;
        if (this.stopped) w.abort();
        outcome = await w.done;
        if (outcome === 'closed') failures = 0;
      } catch (e) {
        outcome = (e instanceof ApiError && e.status === 410) ? 'gone' : 'error';
        why = (e as Error).message;
        if (outcome === 'error') this.h.onError?.(e as Error);
      }
      this.current = null;
      if (this.stopped || outcome === 'aborted') break;
      if (outcome === 'gone') {
        this.h.onRelist?.('410 Gone: resourceVersion expired', this.rv, nowNs());
        while (!this.stopped) {
          try { await this.doList('RELIST'); failures = 0; break; } catch (e) {
            this.h.onError?.(e as Error);
            failures++;
            await this.sleep(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
          }
        }
        continue;
      }
      if (outcome === 'error') failures++;
      if (failures > 0) await this.sleep(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
      if (this.stopped) break;
      this.h.onReconnect?.(why, this.rv, nowNs());
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.current?.abort();
    if (this.sleepTimer) clearTimeout(this.sleepTimer);
    this.wake?.();
    await this.done.catch(() => undefined);
  }
}

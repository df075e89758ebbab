/**
 * A minimal Kubernetes REST client for the lab's kubelet and kube-proxy (fetch; the real protocol:
 * list with resourceVersion, then ?watch=true JSON-lines streams; relist on 410 Gone or stream end).
 */
export interface KObj { apiVersion?: string; kind?: string; metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; deletionTimestamp?: string; deletionGracePeriodSeconds?: number; labels?: Record<string, string>; [k: string]: unknown }; spec?: any; status?: any; [k: string]: unknown }

export class KubeClient {
  constructor(readonly baseUrl: string) {}

  async req(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<{ status: number; json: any }> {
    const r = await fetch(this.baseUrl + path, {
      method, headers: body !== undefined ? { 'content-type': contentType, accept: 'application/json' } : { accept: 'application/json' },
      body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    let json: any = null;
    try { json = text ? JSON.parse(text) : null; } catch { json = { message: text }; }
    return { status: r.status, json };
  }

  async mustOk(method: string, path: string, body?: unknown, contentType?: string): Promise<any> {
    const r = await this.req(method, path, body, contentType);
    if (r.status >= 300) throw new Error(`${method} ${path}: ${r.status} ${r.json?.message ?? ''}`);
    return r.json;
  }
}

export type WatchType = 'ADDED' | 'MODIFIED' | 'DELETED';

/**
 * Informer-like loop: list, then watch from the list's resourceVersion; deliver every change with the
 * receipt instant. Restarts on errors; stops when the signal aborts.
 */
export async function informer(client: KubeClient, path: string, onEvent: (type: WatchType, obj: KObj) => void,
  signal: AbortSignal, onSynced?: () => void): Promise<void> {
  const known = new Map<string, KObj>();
  const key = (o: KObj) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  const sep = path.includes('?') ? '&' : '?';
  let synced = false;
  while (!signal.aborted) {
    try {
      const list = await client.mustOk('GET', path);
      const seen = new Set<string>();
      for (const o of list.items ?? []) {
        seen.add(key(o));
        const old = known.get(key(o));
        known.set(key(o), o);
        if (!old) onEvent('ADDED', o);
        else if (old.metadata.resourceVersion !== o.metadata.resourceVersion) onEvent('MODIFIED', o);
      }
      for (const [k, o] of known) if (!seen.has(k)) { known.delete(k); onEvent('DELETED', o); }
      if (!synced) { synced = true; onSynced?.(); }
      let rv: string = list.metadata?.resourceVersion ?? '';
      // watch until the stream ends or says 410
      for (;;) {
        if (signal.aborted) return;
        const res = await fetch(`${client.baseUrl}${path}${sep}watch=true&allowWatchBookmarks=true&resourceVersion=${rv}`, { signal });
        if (res.status === 410) break;
        if (!res.ok || !res.body) { await new Promise((r) => setTimeout(r, 200)); break; }
        let buf = '';
        let gone = false;
        const dec = new TextDecoder();
        for await (const chunk of res.body as any as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1);
            if (!line) continue;
            let ev: any;
            try { ev = JSON.parse(line); } catch { continue; }
            if (ev.type === 'ERROR') { if (ev.object?.code === 410) gone = true; continue; }
            const o = ev.object as KObj;
            if (o?.metadata?.resourceVersion) rv = o.metadata.resourceVersion;
            if (ev.type === 'BOOKMARK') continue;
            if (ev.type === 'DELETED') known.delete(key(o)); else known.set(key(o), o);
            onEvent(ev.type, o);
          }
          if (gone) break;
        }
        if (gone) break;
      }
    } catch (e) {
      if (signal.aborted) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

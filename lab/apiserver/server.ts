/**
 * The lab's API server: plain HTTP speaking the Kubernetes REST protocol (discovery, LIST/GET/POST/PUT/
 * PATCH/DELETE, chunked watch streams with bookmarks and 410 Expired) over the in-memory Store, so a
 * real client (kubectl-style, @kubernetes/client-node, the recorder's kube source, the lab's kubelet
 * and kube-proxy) cannot tell it from a real one for what the lab needs. Fault injection for tests.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { API_GROUPS, apiVersionOf, findResource, RESOURCES, type ResourceDef } from './resources.js';
import { patchTypeOf } from './patch.js';
import { toTable, wantsTable } from './table.js';
import { parseFieldSelector, parseLabelSelector, SelectorError, type FieldRequirement, type LabelRequirement } from './selectors.js';
import { ApiError, notFound, Store, type Change, type ListOptions } from './store.js';
import type { Obj } from './util.js';

export interface Faults {
  /** end every open watch stream abruptly (socket destroyed, no final chunk) */
  cutWatches(): number;
  /** end every open watch stream cleanly, like a real API server at its request timeout (clients rewatch) */
  closeWatches(): number;
  /** forget the watch history (every resume from an older resourceVersion gets 410) and make the next
   *  `count` watch requests (default 1) get the 410 ERROR event whatever their resourceVersion */
  expireWatches(count?: number): void;
  /** delay every response by ms (0 turns it off) */
  stall(ms: number): void;
  /** open watch streams right now */
  openWatches(): number;
}

export interface ApiServerOptions {
  host?: string;
  port?: number;
  /** interval of BOOKMARK events on watches that allow them (default 5000 ms) */
  bookmarkIntervalMs?: number;
}

export interface ApiServer {
  url: string;
  server: Server;
  store: Store;
  faults: Faults;
  close(): Promise<void>;
}

interface OpenWatch { res: ServerResponse; end(): void }

const VERSION_INFO = {
  major: '1', minor: '31', gitVersion: 'v1.31.0-rolltrace-lab', gitCommit: '0000000000000000000000000000000000000000',
  gitTreeState: 'clean', buildDate: '2025-01-01T00:00:00Z', goVersion: 'go1.22.0', compiler: 'gc', platform: 'linux/amd64',
};

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-cache, private' });
  res.end(text);
}

function sendStatus(res: ServerResponse, e: ApiError): void {
  sendJson(res, e.code, e.toStatus());
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, 'BadRequest', `the body of the request was in an unknown format - accepted media types include: application/json; error: ${(e as Error).message}`);
  }
}

function resourceList(group: string, version: string): Obj {
  const resources: Obj[] = [];
  for (const d of RESOURCES.filter((r) => r.group === group && r.version === version)) {
    resources.push({
      name: d.resource, singularName: d.singular, namespaced: d.namespaced, kind: d.kind,
      verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
      ...(d.shortNames ? { shortNames: d.shortNames } : {}), ...(d.categories ? { categories: d.categories } : {}),
    });
    for (const sub of d.subresources) {
      resources.push({ name: `${d.resource}/${sub}`, singularName: '', namespaced: d.namespaced, kind: sub === 'binding' ? 'Binding' : d.kind, verbs: sub === 'binding' ? ['create'] : ['get', 'patch', 'update'] });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: group ? `${group}/${version}` : version, resources };
}

function apiGroup(name: string, version: string): Obj {
  const gv = { groupVersion: `${name}/${version}`, version };
  return { kind: 'APIGroup', apiVersion: 'v1', name, versions: [gv], preferredVersion: gv };
}

function boolParam(v: string | null): boolean {
  return v === 'true' || v === '1';
}

function listKind(d: ResourceDef): string {
  return `${d.kind}List`;
}

/** List items carry no kind/apiVersion, like a real API server's typed lists. */
function stripTypeMeta(o: Obj): Obj {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  return rest;
}

export async function startApiServer(store: Store, opts: ApiServerOptions = {}): Promise<ApiServer> {
  const watches = new Set<OpenWatch>();
  let stallMs = 0;
  let forcedExpiries = 0;
  const bookmarkIntervalMs = opts.bookmarkIntervalMs ?? 5000;

  const faults: Faults = {
    cutWatches() {
      const n = watches.size;
      for (const w of [...watches]) {
        w.end();
        w.res.socket?.destroy();
        w.res.destroy();
      }
      return n;
    },
    closeWatches() {
      const n = watches.size;
      for (const w of [...watches]) {
        w.end();
        w.res.end();
      }
      return n;
    },
    expireWatches(count = 1) {
      store.compact();
      forcedExpiries += count;
    },
    stall(ms: number) {
      stallMs = Math.max(0, ms);
    },
    openWatches: () => watches.size,
  };

  function expiredEvent(rv: string): Obj {
    return {
      type: 'ERROR',
      object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${rv} (${store.oldestWatchableRv()})`, reason: 'Expired', code: 410 },
    };
  }

  function serveWatch(req: IncomingMessage, res: ServerResponse, d: ResourceDef, lo: ListOptions, q: URLSearchParams): void {
    const rvParam = q.get('resourceVersion') ?? '';
    const bookmarks = boolParam(q.get('allowWatchBookmarks'));
    const timeoutSeconds = Number(q.get('timeoutSeconds') ?? '0');
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const table = wantsTable(req.headers.accept);
    let firstTable = true;
    const write = (ev: Obj) => {
      if (res.writableEnded || res.destroyed) return;
      if (table && ev.type !== 'ERROR' && ev.type !== 'BOOKMARK') {
        ev = { type: ev.type, object: toTable(d, [ev.object], ev.object.metadata?.resourceVersion, firstTable) };
        firstTable = false;
      }
      res.write(JSON.stringify(ev) + '\n');
    };
    if (forcedExpiries > 0) {
      forcedExpiries--;
      write(expiredEvent(rvParam || '0'));
      res.end();
      return;
    }
    let replay: Change[] = [];
    if (rvParam === '' || rvParam === '0') {
      for (const o of store.list(d.resource, lo).items) write({ type: 'ADDED', object: o });
    } else {
      const r = Number(rvParam);
      if (!Number.isInteger(r) || r < 0) {
        write({ type: 'ERROR', object: new ApiError(400, 'BadRequest', `invalid resource version "${rvParam}"`).toStatus() });
        res.end();
        return;
      }
      const ch = store.changesSince(r);
      if (ch === 'expired') {
        write(expiredEvent(rvParam));
        res.end();
        return;
      }
      replay = ch;
    }
    const deliver = (c: Change) => {
      if (c.resource !== d.resource) return;
      const now = store.matches(c.object, lo);
      const before = c.old ? store.matches(c.old, lo) : false;
      if (c.type === 'ADDED') { if (now) write({ type: 'ADDED', object: c.object }); return; }
      if (c.type === 'DELETED') { if (before) write({ type: 'DELETED', object: c.object }); return; }
      if (now && before) write({ type: 'MODIFIED', object: c.object });
      else if (now) write({ type: 'ADDED', object: c.object });
      else if (before) write({ type: 'DELETED', object: c.object });
    };
    for (const c of replay) deliver(c);
    const unsubscribe = store.subscribe(deliver);
    const timers: NodeJS.Timeout[] = [];
    if (bookmarks) {
      timers.push(setInterval(() => write({ type: 'BOOKMARK', object: { kind: d.kind, apiVersion: apiVersionOf(d), metadata: { resourceVersion: store.resourceVersion() } } }), bookmarkIntervalMs));
    }
    let ended = false;
    const w: OpenWatch = {
      res,
      end() {
        if (ended) return;
        ended = true;
        unsubscribe();
        for (const t of timers) clearInterval(t);
        watches.delete(w);
      },
    };
    if (timeoutSeconds > 0) {
      timers.push(setTimeout(() => { w.end(); res.end(); }, timeoutSeconds * 1000));
    }
    watches.add(w);
    res.on('close', () => w.end());
    req.on('close', () => w.end());
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (stallMs > 0) await new Promise((r) => setTimeout(r, stallMs));
    const url = new URL(req.url ?? '/', 'http://lab');
    const q = url.searchParams;
    const seg = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';

    // ------------------------------------------------------------------------- discovery and health
    if (seg.length === 1 && ['healthz', 'livez', 'readyz'].includes(seg[0]!)) {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end('ok');
      return;
    }
    if (seg.length === 1 && seg[0] === 'version') return sendJson(res, 200, VERSION_INFO);
    if (seg.length === 1 && seg[0] === 'api') {
      const addr = server.address() as AddressInfo;
      return sendJson(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${addr.address}:${addr.port}` }] });
    }
    if (seg.length === 2 && seg[0] === 'api' && seg[1] === 'v1') return sendJson(res, 200, resourceList('', 'v1'));
    if (seg.length === 1 && seg[0] === 'apis') {
      return sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: API_GROUPS.map((g) => { const x = apiGroup(g.name, g.version); delete x.kind; delete x.apiVersion; return x; }) });
    }
    if (seg.length === 2 && seg[0] === 'apis') {
      const g = API_GROUPS.find((x) => x.name === seg[1]);
      if (g) return sendJson(res, 200, apiGroup(g.name, g.version));
    }
    if (seg.length === 3 && seg[0] === 'apis' && API_GROUPS.some((g) => g.name === seg[1] && g.version === seg[2])) {
      return sendJson(res, 200, resourceList(seg[1]!, seg[2]!));
    }

    // -------------------------------------------------------------------------------- resources
    let group: string, version: string, rest: string[];
    if (seg[0] === 'api' && seg[1] === 'v1') { group = ''; version = 'v1'; rest = seg.slice(2); }
    else if (seg[0] === 'apis' && seg.length >= 4) { group = seg[1]!; version = seg[2]!; rest = seg.slice(3); }
    else throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    let watch = boolParam(q.get('watch'));
    if (rest[0] === 'watch') { watch = true; rest = rest.slice(1); }
    let namespace: string | undefined, resource: string | undefined, name: string | undefined, sub: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3 && findResource(group, version, rest[2]!)?.namespaced) {
      namespace = rest[1]; resource = rest[2]; name = rest[3]; sub = rest[4];
      if (rest.length > 5) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    } else {
      [resource, name, sub] = rest;
      if (rest.length > 3) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const d = resource ? findResource(group, version, resource) : undefined;
    if (!d) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (d.namespaced && name !== undefined && namespace === undefined) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
    if (sub !== undefined && !d.subresources.includes(sub)) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');

    let labelSelector: LabelRequirement[] | undefined, fieldSelector: FieldRequirement[] | undefined;
    try {
      labelSelector = parseLabelSelector(q.get('labelSelector'));
      fieldSelector = parseFieldSelector(q.get('fieldSelector'));
    } catch (e) {
      if (e instanceof SelectorError) throw new ApiError(400, 'BadRequest', `unable to parse requirement: ${e.message}`);
      throw e;
    }
    const lo: ListOptions = { namespace, labelSelector, fieldSelector };

    if (name === undefined) {
      // collection
      if (method === 'GET') {
        if (watch) return serveWatch(req, res, d, lo, q);
        const { items, resourceVersion } = store.list(d.resource, lo);
        if (wantsTable(req.headers.accept)) return sendJson(res, 200, toTable(d, items, resourceVersion));
        return sendJson(res, 200, { kind: listKind(d), apiVersion: apiVersionOf(d), metadata: { resourceVersion }, items: items.map(stripTypeMeta) });
      }
      if (method === 'POST') {
        if (d.namespaced && !namespace) throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
        const body = parseJsonBody(await readBody(req)) as Obj;
        if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'BadRequest', 'the request body must be an object');
        if (body.kind && body.kind !== d.kind) throw new ApiError(400, 'BadRequest', `the kind of the provided object (${body.kind}) does not match the URL (${d.kind})`);
        return sendJson(res, 201, store.create(d.resource, body, namespace));
      }
      if (method === 'DELETE') {
        const opts = await deleteOptions(req, q);
        const { items } = store.list(d.resource, lo);
        const out: Obj[] = [];
        for (const o of items) {
          try { out.push(stripTypeMeta(store.delete(d.resource, o.metadata.namespace, o.metadata.name, opts).object)); } catch (e) { if (!(e instanceof ApiError && e.code === 404)) throw e; }
        }
        return sendJson(res, 200, { kind: listKind(d), apiVersion: apiVersionOf(d), metadata: { resourceVersion: store.resourceVersion() }, items: out });
      }
      throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
    }

    // single object
    if (method === 'GET') {
      if (watch) return serveWatch(req, res, d, { ...lo, fieldSelector: [...(fieldSelector ?? []), { field: 'metadata.name', op: 'eq', value: name }] }, q);
      const o = store.get(d.resource, namespace, name);
      if (!o) throw notFound(d, name);
      if (wantsTable(req.headers.accept) && sub === undefined) return sendJson(res, 200, toTable(d, [o], o.metadata.resourceVersion));
      return sendJson(res, 200, o);
    }
    if (method === 'POST' && sub === 'binding') {
      const body = parseJsonBody(await readBody(req)) as Obj;
      const node = body?.target?.name;
      if (!node) throw new ApiError(422, 'Invalid', 'Binding "" is invalid: target.name: Required value');
      const cur = store.get('pods', namespace, name);
      if (!cur) throw new ApiError(404, 'NotFound', `pods "${name}" not found`);
      if (cur.spec.nodeName) throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on pods/binding "${name}": pod ${name} is already assigned to node "${cur.spec.nodeName}"`);
      store.mutate('pods', namespace, name, (p) => { p.spec.nodeName = node; });
      return sendJson(res, 201, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', code: 201 });
    }
    if (method === 'PUT') {
      const body = parseJsonBody(await readBody(req)) as Obj;
      if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ApiError(400, 'BadRequest', 'the request body must be an object');
      body.metadata = body.metadata ?? {};
      if (body.metadata.name !== undefined && body.metadata.name !== name) throw new ApiError(400, 'BadRequest', `the name of the object (${body.metadata.name}) does not match the name on the URL (${name})`);
      if (d.namespaced && body.metadata.namespace !== undefined && body.metadata.namespace !== namespace) throw new ApiError(400, 'BadRequest', 'the namespace of the provided object does not match the namespace sent on the request');
      body.metadata.name = name;
      if (d.namespaced) body.metadata.namespace = namespace;
      return sendJson(res, 200, store.update(d.resource, body, { subresource: sub === 'status' ? 'status' : 'main' }));
    }
    if (method === 'PATCH') {
      const type = patchTypeOf(req.headers['content-type']);
      if (!type) throw new ApiError(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`);
      const body = parseJsonBody(await readBody(req));
      return sendJson(res, 200, store.patch(d.resource, namespace, name, type, body, { subresource: sub === 'status' ? 'status' : 'main' }));
    }
    if (method === 'DELETE' && sub === undefined) {
      const opts = await deleteOptions(req, q);
      const { object } = store.delete(d.resource, namespace, name, opts);
      if (d.group === 'apps') {
        return sendJson(res, 200, { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, group: d.group, kind: d.resource, uid: object.metadata.uid } });
      }
      return sendJson(res, 200, object);
    }
    throw new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
  }

  async function deleteOptions(req: IncomingMessage, q: URLSearchParams): Promise<{ gracePeriodSeconds?: number; preconditions?: { uid?: string; resourceVersion?: string } }> {
    const text = await readBody(req);
    const body = text.trim() ? (parseJsonBody(text) as Obj) : {};
    let grace: number | undefined = body?.gracePeriodSeconds;
    if (q.get('gracePeriodSeconds') !== null) grace = Number(q.get('gracePeriodSeconds'));
    if (grace !== undefined && (!Number.isInteger(grace) || grace < 0)) throw new ApiError(400, 'BadRequest', `invalid gracePeriodSeconds ${grace}`);
    return { gracePeriodSeconds: grace, preconditions: body?.preconditions };
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      if (res.headersSent) { res.destroy(); return; }
      if (e instanceof ApiError) return sendStatus(res, e);
      process.stderr.write(`lab apiserver: ${req.method} ${req.url}: ${(e as Error).stack ?? e}\n`);
      sendStatus(res, new ApiError(500, 'InternalError', `Internal error occurred: ${(e as Error).message}`));
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${host}:${addr.port}`,
    server,
    store,
    faults,
    async close() {
      faults.cutWatches();
      await new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); });
    },
  };
}

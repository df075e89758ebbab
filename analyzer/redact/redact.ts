/**
 * One consistent redaction pass over every table of a bundle, written to a new bundle with
 * writeWholeBundle() and plain inserts (the input is never written):
 * - packets: payload bytes beyond the L4 header dropped (caplen fixed, len kept)
 * - k8s objects: Secrets dropped whole; metadata.managedFields, last-applied-configuration and
 *   secret-looking annotations removed; env values, data/stringData values, secret-looking fields and
 *   command/args values masked
 * - events: secret-looking attrs masked, process command lines' argument values masked
 * - everywhere: URL query strings removed
 * - with `pseudonymize`: IPs, namespaces, pod/workload/service/slice/node names and label values
 *   mapped to stable pseudonyms across all tables and inside packet bytes (checksums fixed)
 */
import { writeWholeBundle } from '../../schemas/db.js';
import { MAX_JSON_DEPTH, parseJsonBounded } from '../../schemas/json.js';
import { META_KEYS } from '../../schemas/rows.js';
import type { BundleReader } from '../bundle-reader.js';
import { pseudonymizeFrame, stripPayload } from './packet.js';
import { FrameStore } from '../../schemas/decode/chunks.js';
import { dbChunkSink } from '../chunk-sink.js';
import { Pseudonymizer } from './pseudonymize.js';

export const MASK = '[redacted]';
export const SECRET_KEY_RE = /(pass(word|wd|phrase)?$|passw|secret|token|credential|api[-_]?key|private[-_]?key|access[-_]?key|client[-_]?key|auth|bearer|cookie|session)/i;
const DROP_ANNOTATIONS = new Set(['kubectl.kubernetes.io/last-applied-configuration', 'deployment.kubernetes.io/desired-replicas-config']);

export interface RedactCounts {
  packets: number;
  payloadBytesDropped: number;
  secretsDropped: number;
  managedFields: number;
  annotations: number;
  envValues: number;
  secretFields: number;
  dataValues: number;
  commandArgs: number;
  urlQueries: number;
  ipsPseudonymized: number;
  namesPseudonymized: number;
}

export function emptyCounts(): RedactCounts {
  return { packets: 0, payloadBytesDropped: 0, secretsDropped: 0, managedFields: 0, annotations: 0, envValues: 0, secretFields: 0, dataValues: 0, commandArgs: 0, urlQueries: 0, ipsPseudonymized: 0, namesPseudonymized: 0 };
}

/** Remove query strings (and fragments) from every http(s) URL in a text. */
export function stripUrlQueries(s: string, c?: RedactCounts): string {
  return s.replace(/\b(https?:\/\/[^\s"'?#<>]*)[?#][^\s"'<>]*/gi, (_m, base: string) => { if (c) c.urlQueries++; return base; });
}

/** argv[0] and flag names kept, every value masked: `/app --password x --port 80 run` → `/app --password *** --port *** ***`. */
export function maskArgs(args: string[], keepFirst: boolean, c?: RedactCounts): string[] {
  return args.map((a, i) => {
    if (i === 0 && keepFirst) return a;
    if (/^--?[A-Za-z][\w-]*$/.test(a)) return a;
    const m = /^(--?[A-Za-z][\w-]*=)/.exec(a);
    if (c) c.commandArgs++;
    return m ? `${m[1]}***` : '***';
  });
}
export function maskCmdline(s: string, c?: RedactCounts): string {
  const parts = s.split(/\s+/).filter(Boolean);
  return maskArgs(parts, true, c).join(' ');
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Mask secret-looking string fields and URL queries anywhere in a JSON value (in place). */
function maskDeep(v: Json, c: RedactCounts): Json {
  if (typeof v === 'string') return stripUrlQueries(v, c);
  if (Array.isArray(v)) return v.map((x) => maskDeep(x, c));
  if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (typeof x === 'string' && SECRET_KEY_RE.test(k) && x !== MASK) { v[k] = MASK; c.secretFields++; continue; }
      v[k] = maskDeep(x, c);
    }
  }
  return v;
}

function redactContainer(ct: Record<string, Json>, c: RedactCounts): void {
  const env = ct.env;
  if (Array.isArray(env)) for (const e of env) if (e && typeof e === 'object' && !Array.isArray(e) && typeof e.value === 'string') { e.value = MASK; c.envValues++; }
  if (Array.isArray(ct.command)) ct.command = maskArgs(ct.command.map(String), true, c);
  if (Array.isArray(ct.args)) ct.args = maskArgs(ct.args.map(String), false, c);
}

/** Redact one Kubernetes object (returns null when the object must be dropped whole). */
export function redactK8sObject(kind: string, obj: Json, c: RedactCounts): Json | null {
  if (kind === 'Secret') { c.secretsDropped++; return null; }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return obj;
  const md = obj.metadata;
  if (md && typeof md === 'object' && !Array.isArray(md)) {
    if ('managedFields' in md) { delete md.managedFields; c.managedFields++; }
    const ann = md.annotations;
    if (ann && typeof ann === 'object' && !Array.isArray(ann)) {
      for (const k of Object.keys(ann)) if (DROP_ANNOTATIONS.has(k) || SECRET_KEY_RE.test(k)) { delete ann[k]; c.annotations++; }
    }
  }
  for (const key of ['data', 'stringData', 'binaryData'] as const) {
    const d = obj[key];
    if (d && typeof d === 'object' && !Array.isArray(d)) for (const k of Object.keys(d)) { d[k] = MASK; c.dataValues++; }
  }
  // pod specs: the object's own spec, and templates of workloads
  const specs: Json[] = [obj.spec ?? null];
  const tpl = (obj.spec as { template?: { spec?: Json } } | undefined)?.template?.spec;
  if (tpl) specs.push(tpl);
  for (const s of specs) {
    if (!s || typeof s !== 'object' || Array.isArray(s)) continue;
    for (const list of ['containers', 'initContainers', 'ephemeralContainers']) {
      const l = s[list];
      if (Array.isArray(l)) for (const ct of l) if (ct && typeof ct === 'object' && !Array.isArray(ct)) redactContainer(ct, c);
    }
  }
  return maskDeep(obj, c);
}

/** Names worth pseudonymizing, from Kubernetes objects and event attrs. */
function collectNames(reader: BundleReader, p: Pseudonymizer): void {
  const meta = (o: Record<string, unknown> | undefined, kind: string) => {
    if (!o) return;
    p.addName(o.namespace, 'ns');
    p.addName(o.name, kind);
    p.addName(o.generateName, kind);
    const labels = o.labels as Record<string, unknown> | undefined;
    if (labels && typeof labels === 'object') for (const v of Object.values(labels)) p.addName(v, 'label');
    for (const r of (o.ownerReferences as Array<Record<string, unknown>> | undefined) ?? []) p.addName(r?.name, 'owner');
  };
  const kindTag: Record<string, string> = { Pod: 'pod', Deployment: 'deploy', ReplicaSet: 'rs', Service: 'svc', EndpointSlice: 'slice', Node: 'node', Namespace: 'ns' };
  for (const r of reader.k8sObjects()) {
    p.addName(r.namespace, 'ns');
    p.addName(r.name, kindTag[r.kind] ?? 'obj');
    try {
      const j = parseJsonBounded(r.object);
      if (!j.ok) continue;
      const o = j.v as Record<string, any>;
      meta(o.metadata, kindTag[r.kind] ?? 'obj');
      p.addName(o.spec?.nodeName, 'node');
      for (const e of o.endpoints ?? []) { p.addName(e?.nodeName, 'node'); p.addName(e?.targetRef?.name, 'pod'); p.addName(e?.targetRef?.namespace, 'ns'); }
      meta(o.spec?.template?.metadata, 'pod');
    } catch { /* unparsable objects are copied as text */ }
  }
  for (const r of reader.eventsParsed<Record<string, unknown>>()) {
    const a = r.a;
    p.addName(a.namespace, 'ns');
    p.addName(a.node, 'node');
    if (r.kind.startsWith('pod-')) p.addName(a.name, 'pod');
    if (typeof a.pod === 'string') { const [ns, n] = a.pod.includes('/') ? a.pod.split('/') : [null, a.pod]; p.addName(ns, 'ns'); p.addName(n, 'pod'); }
    p.addName(a.slice, 'slice');
    if (typeof a.service === 'string' && !a.service.includes(':') && !a.service.includes('/')) p.addName(a.service, 'svc');
    p.addName(a.deployment, 'deploy');
  }
  p.addName(reader.metaValue(META_KEYS.node), 'node');
  p.addName(reader.metaValue(META_KEYS.hostname), 'node');
  for (const n of reader.metaJson<string[]>('nodes') ?? []) p.addName(n, 'node');
}

/** Apply a string transform to every string value of a JSON value (and to keys that are exactly a name). */
function mapStrings(v: Json, f: (s: string) => string, keys?: (s: string) => string): Json {
  if (typeof v === 'string') return f(v);
  if (Array.isArray(v)) return v.map((x) => mapStrings(x, f, keys));
  if (v && typeof v === 'object') {
    const out: Record<string, Json> = {};
    for (const [k, x] of Object.entries(v)) out[keys ? keys(k) : k] = mapStrings(x, f, keys);
    return out;
  }
  return v;
}

export interface RedactOptions { pseudonymize?: boolean; overwrite?: boolean; key?: Buffer }

export function redactBundle(reader: BundleReader, out: string, opts: RedactOptions = {}): RedactCounts {
  const c = emptyCounts();
  const p = opts.pseudonymize ? new Pseudonymizer(opts.key) : null;
  if (p) collectNames(reader, p);
  const T = (v: string | null): string | null => {
    if (v === null || v === undefined) return v;
    const s = typeof v === 'string' ? v : String(v); // a damaged row may hold a number or a blob
    return p ? p.text(stripUrlQueries(s, c)) : stripUrlQueries(s, c);
  };
  const ip = (s: string | null): string | null => (s && p ? p.ip(s) : s);
  const jsonText = (text: string, transform?: (v: Json) => Json | null): string | null => {
    const j = parseJsonBounded(text);
    // too deep to walk: dropped whole (copying it raw would skip the secret masking)
    if (!j.ok && j.why === 'too-deep') { c.secretFields++; return JSON.stringify({ redacted: `JSON nested deeper than ${MAX_JSON_DEPTH} levels removed` }); }
    if (!j.ok) return T(text);
    const v = j.v as Json;
    const t = transform ? transform(v) : v;
    if (t === null && transform) return null;
    const m = p ? mapStrings(t, (s) => p.text(stripUrlQueries(s, c)), (k) => p.nameOf(k)) : mapStrings(t, (s) => stripUrlQueries(s, c));
    return JSON.stringify(m);
  };

  writeWholeBundle(out, { createdBy: 'redact', overwrite: opts.overwrite, vacuum: true }, (db) => {
    const skipMeta = new Set<string>([META_KEYS.schemaVersion, META_KEYS.createdBy, META_KEYS.packetsIndex, META_KEYS.redacted]);
    const insMeta = db.prepare('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)');
    for (const [k, v] of reader.meta()) {
      if (skipMeta.has(k)) continue;
      insMeta.run(k, /^[\[{]/.test(v.trim()) ? (jsonText(v) ?? v) : (T(v) ?? v));
    }
    const insSrc = db.prepare('INSERT OR REPLACE INTO sources(name, status, detail, events, dropped, clock) VALUES (?, ?, ?, ?, ?, ?)');
    for (const s of reader.sources()) insSrc.run(s.name, s.status, T(s.detail), s.events, s.dropped, s.clock);

    const insEv = db.prepare('INSERT INTO events(id, ts_ns, source, kind, subject, attrs) VALUES (?, ?, ?, ?, ?, ?)');
    for (const e of reader.events()) {
      const attrs = jsonText(e.attrs, (v) => {
        if (v && typeof v === 'object' && !Array.isArray(v) && typeof v.cmdline === 'string') v.cmdline = maskCmdline(v.cmdline, c);
        return maskDeep(v, c);
      }) ?? '{}';
      insEv.run(e.id, e.ts_ns, e.source, e.kind, T(e.subject), attrs);
    }

    const insPkt = db.prepare(`INSERT INTO packets(id, ts_ns, iface, linktype, caplen, len, l3, src, dst, proto, sport, dport, tcp_flags, seq, ack,
      payload_len, icmp_type, icmp_code, inner_src, inner_dst, inner_proto, inner_sport, inner_dport, data)
      VALUES (@id, @ts_ns, @iface, @linktype, @caplen, @len, @l3, @src, @dst, @proto, @sport, @dport, @tcp_flags, @seq, @ack,
      @payload_len, @icmp_type, @icmp_code, @inner_src, @inner_dst, @inner_proto, @inner_sport, @inner_dport, @data)`);
    // a chunked bundle (schema 3) stays chunked: every frame cut and pseudonymized, the index rebuilt from the new bytes
    const store = reader.hasChunks() ? new FrameStore(dbChunkSink(db)) : null;
    for (const k of reader.packets()) {
      if (store && k.data) {
        const src = k.data instanceof Uint8Array ? k.data : new Uint8Array(k.data as ArrayBuffer);
        const kept = Buffer.from(stripPayload(src, k.linktype));
        c.payloadBytesDropped += src.length - kept.length;
        if (p) pseudonymizeFrame(kept, k.linktype, p.ip);
        c.packets++;
        store.frame(k.iface, k.linktype, k.ts_ns, kept.length, k.len, kept);
        continue;
      }
      let data: Buffer | null = null;
      if (k.data) {
        const src = k.data instanceof Uint8Array ? k.data : new Uint8Array(k.data as ArrayBuffer);
        const kept = Buffer.from(stripPayload(src, k.linktype)); // a copy: rewriting never touches the reader's buffer
        c.payloadBytesDropped += src.length - kept.length;
        if (p) pseudonymizeFrame(kept, k.linktype, p.ip);
        data = kept;
      }
      c.packets++;
      insPkt.run({ ...k, src: ip(k.src), dst: ip(k.dst), inner_src: ip(k.inner_src), inner_dst: ip(k.inner_dst), caplen: data ? data.length : 0, data });
    }

    store?.flush();

    const insCt = db.prepare(`INSERT INTO conntrack(id, ts_ns, type, proto, state, orig_src, orig_dst, orig_sport, orig_dport, reply_src, reply_dst,
      reply_sport, reply_dport, flags, zone, raw) VALUES (@id, @ts_ns, @type, @proto, @state, @orig_src, @orig_dst, @orig_sport, @orig_dport,
      @reply_src, @reply_dst, @reply_sport, @reply_dport, @flags, @zone, @raw)`);
    for (const r of reader.conntrack()) {
      insCt.run({ ...r, orig_src: ip(r.orig_src), orig_dst: ip(r.orig_dst), reply_src: ip(r.reply_src), reply_dst: ip(r.reply_dst), raw: T(r.raw) });
    }

    const insK8s = db.prepare(`INSERT INTO k8s_objects(id, ts_ns, kind, namespace, name, uid, resource_version, event_type, object)
      VALUES (@id, @ts_ns, @kind, @namespace, @name, @uid, @resource_version, @event_type, @object)`);
    for (const r of reader.k8sObjects()) {
      if (r.kind === 'Secret') { c.secretsDropped++; continue; }
      const object = jsonText(r.object, (v) => redactK8sObject(r.kind, v, c));
      if (object === null) continue;
      insK8s.run({ ...r, namespace: p && r.namespace ? p.nameOf(r.namespace) : r.namespace, name: p && r.name ? p.nameOf(r.name) : r.name, object });
    }

    const insNft = db.prepare('INSERT INTO nft_snapshots(id, ts_ns, format, reason, ruleset) VALUES (@id, @ts_ns, @format, @reason, @ruleset)');
    for (const r of reader.nftSnapshots()) {
      // no secret masking here (nft JSON has structural "key" fields); only pseudonyms
      let ruleset = r.ruleset;
      if (p) {
        if (r.format === 'nft-json') {
          const j = parseJsonBounded(r.ruleset);
          ruleset = j.ok ? JSON.stringify(mapStrings(j.v as Json, p.text)) : p.text(String(r.ruleset ?? ''));
        } else ruleset = p.text(r.ruleset);
      }
      insNft.run({ ...r, ruleset });
    }

    const insProbe = db.prepare(`INSERT INTO probe_requests(id, start_ns, end_ns, local_addr, local_port, remote, outcome, status, error)
      VALUES (@id, @start_ns, @end_ns, @local_addr, @local_port, @remote, @outcome, @status, @error)`);
    for (const r of reader.probeRequests()) insProbe.run({ ...r, local_addr: ip(r.local_addr), remote: T(r.remote), error: T(r.error) });

    if (p) { c.ipsPseudonymized = p.ipCount; c.namesPseudonymized = p.nameCount; }
    insMeta.run(META_KEYS.redacted, JSON.stringify({ at: new Date().toISOString(), pseudonymized: !!p, removed: c }));
  });
  return c;
}

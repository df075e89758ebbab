/**
 * `analyzeBundle`: pure function from a bundle reader to `rolltrace.analysis/v1`.
 * Every instant carries its evidence; what the bundle cannot support is null with the reason.
 * A damaged or partial bundle gives a degraded analysis with `warnings`, never a crash.
 */
import { ANALYSIS_SCHEMA_ID, type Analysis, type AnalysisFailure, type AnalysisPod } from '../schemas/analysis.js';
import { InputError } from '../schemas/errors.js';
import { META_KEYS } from '../schemas/rows.js';
import type { BundleReader } from './bundle-reader.js';
import { emptyFacts, loadFacts, type Facts } from './model/facts.js';
import { captureEnds, CT_FLOW_SLACK_NS, feedProbes, feedResets, FailureDetector, resolveFailure, scanPackets, unresolvedFailure, type ResolveContext, type ResolvedFailure } from './model/failures.js';
import { buildIdentity, Identity } from './model/identity.js';
import { programmingLatency } from './model/latency.js';
import { podSequences, type PodSequence } from './model/pods.js';
import { recommend } from './model/recommend.js';
import { loadWorkload, type Workload } from './model/workload.js';
import { takeExcerpts } from './model/excerpts.js';
import { describeDismissed, dismissedItems, screenFailures, type Dismissed } from './model/screen.js';
import { clean, iso, joinAddr, ms, sane, splitAddr } from './util.js';

export interface AnalysisDetail {
  analysis: Analysis;
  seqs: PodSequence[];
  failures: ResolvedFailure[];
  identity: Identity;
  startNs: number | null;
}

function isCorrupt(e: unknown): boolean {
  const code = (e as { code?: string })?.code ?? '';
  return /SQLITE_(CORRUPT|NOTADB)/.test(code) || /malformed|not a database/i.test((e as Error)?.message ?? '');
}

/** Run one stage; SQLite/data errors become warnings, a damaged file becomes an InputError. */
function stage<T>(name: string, warnings: string[], fallback: T, fn: () => T, file: string): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof InputError) throw e;
    if (isCorrupt(e)) throw new InputError(`${file}: damaged bundle (${clean((e as Error).message, 200)}) while reading ${name}`);
    warnings.push(`${name} skipped: ${clean((e as Error)?.message ?? String(e), 200)}`);
    return fallback;
  }
}

/** meta.sources_live_ns (record, schema 3): source -> when it was live; null when absent or malformed */
function liveSince(reader: BundleReader): Record<string, number> | null {
  const j = reader.metaJson<unknown>(META_KEYS.sourcesLiveNs);
  if (!j || typeof j !== 'object' || Array.isArray(j)) return null;
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(j as Record<string, unknown>)) if (typeof v === 'number' && Number.isFinite(v)) out[k] = v;
  return Object.keys(out).length ? out : null;
}

export async function analyzeBundle(reader: BundleReader): Promise<Analysis> {
  return analyzeDetailed(reader).analysis;
}

/** A SQLite error from a damaged file → one-line InputError; anything else is rethrown. */
export function asInputError(e: unknown, file: string): unknown {
  if (e instanceof InputError) return e;
  const name = (e as { name?: string; code?: string })?.name ?? '';
  if (name === 'SqliteError' || isCorrupt(e)) return new InputError(`${file}: damaged bundle (${clean((e as Error).message, 200)})`);
  return e;
}

function quickCheckOk(r: BundleReader): boolean {
  try {
    const rows = r.db.pragma('quick_check(1)') as Array<{ quick_check: string }>;
    return rows.length === 1 && rows[0]!.quick_check === 'ok';
  } catch {
    return false;
  }
}

/**
 * A SQLite error while copying bundle(s) into `out` (redact, merge) → one-line InputError: it names the
 * input that fails SQLite's quick_check, or `out` when writing failed; anything else is rethrown.
 */
export function copyError(e: unknown, inputs: BundleReader[], out: string): unknown {
  if (e instanceof InputError) return e;
  const err = e as { name?: string; code?: string; message?: string };
  if (err?.name !== 'SqliteError' && !isCorrupt(e)) return e;
  const msg = clean(err.message ?? String(e), 200);
  for (const r of inputs) if (!quickCheckOk(r)) return new InputError(`${r.file}: damaged bundle (${msg})`);
  if (/^SQLITE_(FULL|IOERR|CANTOPEN|READONLY|PERM)/.test(err.code ?? '')) return new InputError(`cannot write ${out}: ${msg}`);
  return asInputError(e, inputs.map((r) => r.file).join(', ') || out);
}

export function analyzeDetailed(reader: BundleReader): AnalysisDetail {
  try {
    return analyzeInner(reader);
  } catch (e) {
    throw asInputError(e, reader.file);
  }
}

function analyzeInner(reader: BundleReader): AnalysisDetail {
  const warnings: string[] = [];
  const file = reader.file;
  const missing = reader.missing();
  if (missing.length) warnings.push(`bundle lacks table(s) ${missing.join(', ')}: read as empty`);
  if (!reader.closedCleanly) warnings.push('the recorder did not close this bundle cleanly (crashed or still running): the last second may be missing');
  const range = stage('time range', warnings, null, () => reader.timeRange(), file);
  // a recorded bundle's packet index is built now, once (it is not in the file: see ensurePacketIndex)
  stage('packet index', warnings, 0, () => reader.ensurePacketIndex(), file);
  const startNs = sane(reader.metaNumber(META_KEYS.startedNs)) ?? sane(range?.start) ?? null;
  const endNs = sane(reader.metaNumber(META_KEYS.endedNs)) ?? sane(range?.end) ?? null;
  const node = reader.metaValue(META_KEYS.node) ?? reader.metaValue(META_KEYS.hostname) ?? null;
  const sourceRows = stage('sources', warnings, [], () => reader.sources(), file);
  const sources = sourceRows.map((s) => ({
    name: clean(s.name, 80), status: clean(s.status, 40),
    events: Number.isSafeInteger(s.events) && s.events >= 0 ? s.events : 0,
    dropped: Number.isSafeInteger(s.dropped) && s.dropped >= 0 ? s.dropped : 0,
  }));
  for (const s of sourceRows) {
    if (s.status !== 'ok' && s.status !== 'running') warnings.push(`source ${clean(s.name, 40)} ${clean(s.status, 40)}${s.detail ? `: ${clean(s.detail, 160)}` : ''}`);
    if (Number(s.dropped) > 0) warnings.push(`source ${clean(s.name, 40)} dropped ${s.dropped} record(s)`);
  }
  const facts = stage('process/rule/kube events', warnings, emptyFacts(), () => loadFacts(reader), file);
  warnings.push(...facts.warnings);
  const id = stage('pod identities', warnings, new Identity(), () => buildIdentity(reader, endNs ?? Number.MAX_SAFE_INTEGER), file);
  if (!id.hasKube) warnings.push('no Pod objects from the kube source: pods are named by IP');
  const seqs = stage('pod sequences', warnings, [] as PodSequence[], () => podSequences(id, facts, startNs ?? 0, node, liveSince(reader)), file);
  const seqByKey = new Map(seqs.map((s) => [s.pod.key, s]));
  // one detector, fed by separate stages: a source that cannot be read costs only its own candidates
  const det = new FailureDetector();
  stage('failure detection (probe requests)', warnings, undefined, () => feedProbes(det, reader), file);
  stage('capture ends', warnings, undefined, () => det.setCaptureEnds(captureEnds(reader)), file);
  stage('failure detection (packets)', warnings, undefined, () => scanPackets(det, reader), file);
  stage('failure detection (syn timeouts)', warnings, undefined, () => det.sweep(det.lastTs, true), file);
  stage('failure detection (kernel resets)', warnings, undefined, () => feedResets(det, facts, id), file);
  if (det.capped) warnings.push(`${det.capped} further failure candidates not analyzed (cap reached)`);
  const candidates = det.candidates();
  const vips = new Set<string>();
  for (const r of facts.rules) if (r.vip) { vips.add(r.vip); const a = splitAddr(r.vip); if (a) vips.add(a.ip); }
  for (const r of facts.noEp) if (r.vip) { vips.add(r.vip); const a = splitAddr(r.vip); if (a) vips.add(a.ip); }
  for (const c of candidates) if (c.probe) { const a = splitAddr(c.probe.remote); if (a) { vips.add(a.ip); vips.add(`${a.ip}:${a.port}`); } }
  // a node's own address on a NodePort path port is the service the client connected to, not a backend (a rollout
  // that never lost its endpoints has no no-endpoint rule naming it)
  const nodeAddrs = nodeAddrsOf(reader, id);
  for (const r of facts.pathRules ?? []) {
    const np = r.path === 'node-port' ? /^\*:(\d+)$/.exec(r.addr) : null;
    if (np) for (const a of nodeAddrs.keys()) vips.add(joinAddr(a, Number(np[1])));
  }
  const ctStmt = reader.has('conntrack') ? stage('conntrack', warnings, null, () => reader.db.prepare(
    // a DNATed row first (merged bundles hold the DNATing node's row and the receiving node's one)
    'SELECT ts_ns, orig_dst, orig_dport, reply_src, reply_sport, state, raw FROM conntrack WHERE orig_src = ? AND orig_sport = ? AND ts_ns BETWEEN ? AND ? ORDER BY (reply_src IS orig_dst), abs(ts_ns - ?) LIMIT 1'), file) : null;
  // flows begin with NEW: a connection whose SYN was captured owns only the rows from its flow's NEW on (a SYN
  // on a tuple whose older flow lingers in TIME_WAIT destroys that flow: its DESTROY row, stamped just after the
  // new SYN, names the older flow's backend)
  const ctNewStmt = ctStmt && reader.db.prepare("SELECT 1 FROM conntrack WHERE type = 'NEW' LIMIT 1").get() !== undefined
    ? reader.db.prepare("SELECT ts_ns FROM conntrack WHERE orig_src = ? AND orig_sport = ? AND type = 'NEW' AND ts_ns >= ? ORDER BY ts_ns LIMIT 1") : null;
  let ctSpan: { a: number | null; b: number | null } | undefined;
  const mergedNodes = (() => { const v = reader.metaJson<unknown>('nodes'); return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []; })();
  const ctx: ResolveContext = {
    id, facts, seqs: seqByKey, vips, node, nodes: mergedNodes.length ? mergedNodes : node ? [node] : [], nodeAddrs,
    conntrack: (client, cport, t, o) => {
      if (!ctStmt) return null;
      try {
        let lo = t - 30e9, hi = t + 30e9;
        if (o?.synAt != null && ctNewStmt) {
          // this connection's NEW (each node of a merged bundle has its own, within ms) and the next flow's on
          // this client ip:port, at least CT_FLOW_SLACK_NS later (ns as doubles are exact to ~0.25 µs: 1 µs margins)
          const first = ctNewStmt.get(client, cport, o.synAt - CT_FLOW_SLACK_NS) as { ts_ns: number } | undefined;
          // no flow began near its SYN: the node never confirmed one (a rejected or dropped SYN)
          if (!first || first.ts_ns > t + CT_FLOW_SLACK_NS) return null;
          const next = ctNewStmt.get(client, cport, first.ts_ns + CT_FLOW_SLACK_NS) as { ts_ns: number } | undefined;
          lo = first.ts_ns - 1e3;
          if (next) hi = Math.min(hi, next.ts_ns - 1e3);
        }
        if (o?.before !== undefined) hi = Math.min(hi, o.before);
        if (hi < lo) return null;
        const r = ctStmt.get(client, cport, lo, hi, t) as { ts_ns: number; orig_dst: string | null; orig_dport: number | null; reply_src: string | null; reply_sport: number | null; state: string | null; raw: string | null } | undefined;
        if (!r) return null;
        if (r.orig_dst && r.reply_src !== r.orig_dst) vips.add(r.orig_dst);
        // merge prefixes each node's conntrack line with [node]
        const m = mergedNodes.length > 1 ? /^\[([^\]]+)\]/.exec(r.raw ?? '') : null;
        return { ...r, ts: r.ts_ns, node: m ? m[1]! : null };
      } catch { return null; }
    },
    conntrackMiss: (client, cport, t) => {
      const gap = (why: string) => ({ why, gap: true });
      if (!ctStmt) return gap(reader.has('conntrack') ? 'the conntrack records could not be read' : 'the bundle holds no conntrack records');
      try {
        const span = (ctSpan ??= reader.db.prepare('SELECT (SELECT min(ts_ns) FROM conntrack) AS a, (SELECT max(ts_ns) FROM conntrack) AS b').get() as { a: number | null; b: number | null });
        if (span.a === null || span.b === null) return gap('conntrack recorded no event');
        if (t > span.b + CT_FLOW_SLACK_NS) return gap(`conntrack's last recorded event is at ${iso(span.b)}, ${ms(t - span.b)} ms before this connection: its recording had ended while the capture went on`);
        if (t < span.a - CT_FLOW_SLACK_NS) return gap(`conntrack's first recorded event is at ${iso(span.a)}, ${ms(span.a - t)} ms after this connection: its recording had not begun`);
        const near = reader.db.prepare('SELECT ts_ns, type FROM conntrack WHERE orig_src = ? AND orig_sport = ? AND ts_ns BETWEEN ? AND ? ORDER BY abs(ts_ns - ?) LIMIT 1')
          .get(client, cport, t - 30e9, t + 30e9, t) as { ts_ns: number; type: string } | undefined;
        if (near) return { why: `conntrack's nearest row for this client port (${near.type} at ${iso(near.ts_ns)}, ${ms(Math.abs(near.ts_ns - t))} ms ${near.ts_ns < t ? 'before' : 'after'}) belongs to another flow: none began within ${CT_FLOW_SLACK_NS / 1e6} ms of this connection's SYN`, gap: false };
        return null;
      } catch { return null; }
    },
  };
  let unresolved = 0;
  let firstError = '';
  const resolved = stage('failure resolution', warnings, [] as ResolvedFailure[], () => candidates.map((c) => {
    try {
      return resolveFailure(c, ctx);
    } catch (e) {
      if (e instanceof InputError || isCorrupt(e)) throw e;
      if (!unresolved++) firstError = clean((e as Error)?.message ?? String(e), 200);
      return unresolvedFailure(c, e);
    }
  }), file);
  if (unresolved) warnings.push(`${unresolved} failure(s) could not be resolved and are reported with cause unknown: ${firstError}`);
  const screened = stage('failure screening', warnings, { kept: resolved, dismissed: [] as Dismissed[] }, () => screenFailures(resolved, ctx, reader), file);
  const failures = screened.kept;
  warnings.push(...describeDismissed(screened.dismissed));
  const ignored = dismissedItems(screened.dismissed);
  if (det.resetsOutsideTenure.length) {
    warnings.push(`${det.resetsOutsideTenure.length} kernel reset(s) from a pod IP outside every pod's observed tenure not attributed to a pod, not failures`);
    for (const x of det.resetsOutsideTenure) ignored.push({ group: 'outside-tenure', why: x });
  }
  if (det.afterCapture.length) {
    warnings.push(`${det.afterCapture.length} SYN(s) unanswered when their own interface's capture ended, less than 1 s after them, not judged (blind spot)`);
    for (const x of det.afterCapture) ignored.push({ group: 'after-capture', why: x });
  }
  if (det.beforeCapture.length) {
    warnings.push(`${det.beforeCapture.length} ICMP error(s) about connections whose SYN may predate the capture not judged (blind spot)`);
    for (const x of det.beforeCapture) ignored.push({ group: 'before-capture', why: x });
  }
  const killedBy = new Map<PodSequence, number>();
  for (const f of failures) {
    if (!f.backend.podKey) continue;
    const s = seqByKey.get(f.backend.podKey);
    if (!s) continue;
    s.failedConnections++;
    // a connection cut at the SIGKILL of a process that ignored SIGTERM is that process's doing
    if (s.verdict === 'ignored-sigterm' && f.cause === 'killed-in-flight' && s.sigkill !== null && f.at >= s.sigkill - 5e6) {
      killedBy.set(s, (killedBy.get(s) ?? 0) + 1);
      f.evidence.push(`cut at the SIGKILL of ${s.pod.namespace ? `${s.pod.namespace}/` : ''}${s.pod.name} (${iso(s.sigkill)}), which ignored SIGTERM`);
    }
  }
  for (const s of seqs) warnings.push(...s.inconsistencies);
  const podNodes = perNode(seqs, failures, node);
  const remoteUnrecorded = failures.filter((f) => f.routed?.remote && !f.routed.rulesRecorded).length;
  if (remoteUnrecorded) warnings.push(`${remoteUnrecorded} failure(s) arrived already DNATed by other node(s) whose rules are not in this bundle: those nodes' rule removals are unknown (record every node and \`rolltrace merge\` the bundles)`);
  const hasRules = facts.rules.length > 0;
  if (!hasRules) warnings.push('no endpoint-rule events: this node\'s rule removals are unknown (nftables source missing or saw no change)');
  const latency = stage('programming latency', warnings, [], () => programmingLatency(facts, node, hasRules), file);
  const workload = stage('recorded workload (Deployment, Services, PDBs, server version)', warnings, null as Workload | null, () => loadWorkload(reader), file);
  const nodesSeen = [...new Set([...(node ? [node] : []), ...facts.rules.map((r) => r.node).filter((x): x is string => !!x)])];
  // a rule change received before the slice change it follows: the kube receipt came late (impossible order)
  const negLat = latency.filter((l) => l.latencyMs !== null && l.latencyMs < 0);
  if (negLat.length) warnings.push(`${negLat.length} programming latency measurement(s) negative (the rule change was received up to ${Math.max(...negLat.map((l) => -l.latencyMs!))} ms before the EndpointSlice change it follows): the kube source's receipt stamps are late; not used for the recommendation`);
  const addLat = latency.filter((l) => l.change === 'added' && l.latencyMs !== null && l.latencyMs >= 0).map((l) => l.latencyMs!);
  const rec = recommend({ seqs, failures, workload, nodes: nodesSeen, slowestAddMs: addLat.length ? Math.max(...addLat) : null, file });
  if (reader.badAttrs) warnings.push(`${reader.badAttrs} event row(s) have attrs that are not JSON (or nest deeper than 512 levels, or exceed 8 MiB): read as empty`);
  const pods: AnalysisPod[] = seqs.map((s) => {
    const p: AnalysisPod = {
      namespace: s.pod.namespace ? clean(s.pod.namespace, 253) : null,
      name: clean(s.pod.name, 253),
      ip: s.ip,
      deletionAt: iso(s.deletion), sigtermAt: iso(s.sigterm), listenerClosedAt: iso(s.listenerClosed), exitedAt: iso(s.exited),
      endpointTerminatingAt: iso(s.endpointTerminating), endpointRemovedAt: iso(s.endpointRemoved), ruleRemovedAt: iso(s.ruleRemoved),
      exposureMs: s.exposureNs === null ? null : Math.round(s.exposureNs / 1e3) / 1e3,
      verdict: s.verdict, failedConnections: s.failedConnections, evidence: s.evidence.map((e) => clean(e, 600)),
    };
    if (s.sigkill !== null) p.sigkillAt = iso(s.sigkill);
    if (s.routes.length) p.routes = s.routes.map((r) => ({ path: clean(r.path, 40), addr: clean(r.addr, 100), policy: clean(r.policy, 20), service: clean(r.service, 300), node: r.node ? clean(r.node, 100) : null, stoppedAt: iso(r.stoppedAt), fallback: r.fallback }));
    if (killedBy.has(s)) p.killedConnections = killedBy.get(s)!;
    const pn = podNodes.get(s);
    if (pn?.length) p.nodes = pn;
    if (s.ruleRemovedByNode.size > 1) p.ruleRemovedAtByNode = Object.fromEntries([...s.ruleRemovedByNode].map(([k, v]) => [clean(k, 100), iso(v)]));
    return p;
  });
  const pathOf = failurePaths(facts, ctx.nodes!.length > 1);
  const fails: AnalysisFailure[] = failures.map((f) => ({ f, pa: pathOf(f) })).map(({ f, pa }) => ({
    at: iso(f.at) ?? '1970-01-01T00:00:00.000000Z',
    client: clean(f.client, 100), service: f.service ? clean(f.service, 100) : null,
    backend: { ip: f.backend.ip ? clean(f.backend.ip, 64) : null, port: Number.isInteger(f.backend.port) ? f.backend.port : null, pod: f.backend.pod ? clean(f.backend.pod, 300) : null },
    cause: f.cause, evidence: f.evidence.map((e) => clean(e, 600)), via: f.via.map((v) => clean(v, 40)), error: f.error ? clean(f.error, 300) : null,
    ...pa, ...(f.routed ? { node: f.routed.node ? clean(f.routed.node, 100) : null } : {}),
  }));
  const nodes = nodesSeen.map((n) => clean(n, 100));
  const analysis: Analysis = {
    schema: ANALYSIS_SCHEMA_ID,
    bundle: { node: node ? clean(node, 100) : null, start: iso(startNs), end: iso(endNs), sources, nodes, closedCleanly: reader.closedCleanly },
    pods, failures: fails,
    recommendation: {
      ...rec, why: clean(rec.why, 2000), notes: rec.notes?.map((n) => clean(n, 600)),
      kubectl: rec.kubectl ? clean(rec.kubectl, 4000) : rec.kubectl, verify: rec.verify?.map((v) => clean(v, 2000)),
      checks: rec.checks?.map((c) => ({ ...c, evidence: c.evidence.map((e) => clean(e, 600)) })),
    },
    programmingLatency: latency.map((l) => ({ ...l, endpoint: clean(l.endpoint, 64), node: l.node ? clean(l.node, 100) : null, evidence: l.evidence.map((e) => clean(e, 600)) })),
    warnings: warnings.map((w) => clean(w, 400)),
    ignored: ignored.slice(0, 1000).map((x) => ({ group: clean(x.group, 40), why: clean(x.why, 600) })),
  };
  analysis.excerpts = takeExcerpts(reader, analysis, startNs);
  return { analysis, seqs, failures, identity: id, startNs };
}

/** Nodes' own addresses: the recorder's interface addresses per node (meta node_addrs), and pods' status.hostIP. */
function nodeAddrsOf(reader: BundleReader, id: Identity): Map<string, string | null> {
  const m = id.nodeAddrs();
  const meta = reader.metaJson<unknown>(META_KEYS.nodeAddrs);
  if (meta && typeof meta === 'object' && !Array.isArray(meta)) {
    for (const [n, list] of Object.entries(meta as Record<string, unknown>)) {
      if (Array.isArray(list)) for (const a of list) if (typeof a === 'string' && !m.has(a)) m.set(a, n);
    }
  }
  return m;
}

/**
 * Per pod, per node that routed to it: each recorded node's rule removal and exposure, and for connections
 * already DNATed on nodes whose rules are not in the bundle, a lower bound of the exposure there (the last
 * one refused after the listener closed). Adds the remote part to the pod's evidence.
 */
function perNode(seqs: PodSequence[], failures: ResolvedFailure[], thisNode: string | null): Map<PodSequence, NonNullable<AnalysisPod['nodes']>> {
  const out = new Map<PodSequence, NonNullable<AnalysisPod['nodes']>>();
  const r3 = (ns: number) => Math.round(ns / 1e3) / 1e3;
  for (const s of seqs) {
    const mine = failures.filter((f) => f.backend.podKey === s.pod.key);
    const lc = s.listenerClosed;
    const list: NonNullable<AnalysisPod['nodes']> = [];
    for (const [n, at] of [...s.ruleRemovedByNode].sort((a, b) => a[0].localeCompare(b[0]))) {
      const name = n || null;
      list.push({ node: name ? clean(name, 100) : null, recorded: true, ruleRemovedAt: iso(at), exposureMs: at !== null && lc !== null ? r3(at - lc) : null, exposureAtLeastMs: null,
        failedConnections: mine.filter((f) => !f.routed?.remote && (f.routed?.node ?? thisNode ?? '') === n).length });
    }
    const remote = new Map<string | null, ResolvedFailure[]>();
    for (const f of mine) if (f.routed?.remote && !list.some((x) => x.recorded && x.node === f.routed!.node)) remote.set(f.routed.node, [...(remote.get(f.routed.node) ?? []), f]);
    for (const [n, fs] of [...remote].sort((a, b) => (a[0] ?? '\uffff').localeCompare(b[0] ?? '\uffff'))) {
      const refused = fs.filter((f) => f.cause === 'listener-closed' && lc !== null && f.at >= lc);
      const last = refused.length ? refused.reduce((a, b) => (b.at > a.at ? b : a)) : null;
      const atLeast = last && lc !== null ? r3(last.at - lc) : null;
      list.push({ node: n ? clean(n, 100) : null, recorded: false, ruleRemovedAt: null, exposureMs: null, exposureAtLeastMs: atLeast, failedConnections: fs.length });
      s.evidence.push(`${fs.length} connection(s) routed by other node(s) (${n ?? 'remote node unknown'}) failed here${last ? `; last refused ${iso(last.at)}, ${atLeast} ms after the listener closed${s.ruleRemoved !== null ? ` (${r3(last.at - s.ruleRemoved)} ms after ${thisNode ?? 'this node'} removed its rule)` : ''}` : ''}: other nodes' rules are not in this bundle, so the pod's exposure there is at least that long`);
    }
    if (list.length) out.set(s, list);
  }
  return out;
}

/**
 * Which path a failed connection took on this node, from the address it was sent to and the per-path rule
 * events (a NodePort path is `*:PORT`); a no-endpoint failure on a Local external path is the Local blackhole.
 */
function failurePaths(facts: Facts, merged: boolean): (f: ResolvedFailure) => { path?: AnalysisFailure['path'] } {
  const paths = new Map<string, { path: string; addr: string; policy: string }>();
  for (const r of facts.pathRules ?? []) paths.set(`${r.path}|${r.addr}`, { path: r.path, addr: r.addr, policy: r.policy });
  if (!paths.size) return () => ({});
  const list = [...paths.values()];
  const clusterIps = new Set(list.filter((p) => p.path === 'cluster-ip').map((p) => splitAddr(p.addr)?.ip));
  return (f) => {
    const sa = f.service ? splitAddr(f.service) : null;
    if (!sa) return { path: null };
    const exact = list.find((p) => p.addr === f.service) ?? list.find((p) => { const a = splitAddr(p.addr); return !!a && a.ip === sa.ip && a.port === sa.port; });
    const np = !exact && !clusterIps.has(sa.ip) ? list.find((p) => p.path === 'node-port' && p.addr === `*:${sa.port}`) : undefined;
    const hit = exact ?? np ?? null;
    if (!hit) return { path: null };
    f.evidence.push(`took the ${hit.path} path ${hit.addr} (${hit.policy === 'Local' ? 'externalTrafficPolicy: Local' : `policy ${hit.policy}`}) on ${merged && f.routed?.node ? f.routed.node : 'this node'}`);
    if (f.cause === 'no-endpoint' && hit.policy === 'Local' && hit.path !== 'cluster-ip') {
      const drop = facts.noEp.find((r) => r.added && r.action === 'drop' && r.ts <= f.at + 50e6 && (r.node_port === sa.port || r.vip === f.service));
      if (drop) f.evidence.push(`the Local blackhole: this node drops traffic to ${hit.addr} (no local endpoint left, rule received ${iso(drop.ts)}) while the cluster IP path still had endpoints elsewhere`);
    }
    return { path: hit };
  };
}

/** Failures found: the CI gate. */
export function hasFailures(a: Analysis): boolean {
  return a.failures.length > 0 || a.pods.some((p) => p.verdict === 'listener-closed-before-rule-removed');
}

/**
 * `rolltrace import`: build a bundle from artifacts captured by hand — tcpdump -w / Wireshark pcapng,
 * strace -f -ttt logs, `nft -j monitor` output, conntrack -E logs, JSON lines of watch events — so people
 * who arrive with a pcap attached to an incident get an analysis without having run the recorder.
 * Each artifact goes through the same pure parsers the live sources use.
 */
import { closeSync, createReadStream, existsSync, openSync, readSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { hostname } from 'node:os';
import { removeBundleFiles } from '../schemas/db.js';
import { InputError } from '../schemas/errors.js';
import { META_KEYS, type K8sObjectRow } from '../schemas/rows.js';
import { ev } from '../schemas/events.js';
import { BundleWriter } from './bundle-writer.js';
import { CaptureStreamParser } from './decode/pcapfile.js';
import { FrameStore, PcapStreamCutter } from '../schemas/decode/chunks.js';
import { boundedLines, MAX_DOCUMENT_BYTES, MAX_LINE_BYTES, readBoundedLines, refuseBinary, type LineStats } from './import/lines.js';
import { MAX_JSON_DEPTH, parseJsonBounded } from '../schemas/json.js';

export interface ImportOptions {
  out: string;
  pcap: string[];
  strace: string[];
  nftMonitor?: string;
  nftRuleset?: string;
  /** iptables-save snapshots, one per file, each stamped by its first line */
  iptablesSave?: string[];
  conntrack?: string;
  watch?: string;
  force?: boolean;
}

function mustRead(file: string, what: string): void {
  if (!existsSync(file)) throw new InputError(`${what} ${file}: no such file`);
  const st = statSync(file);
  if (!st.isFile()) throw new InputError(`${what} ${file}: not a regular file`);
  if (st.size === 0) throw new InputError(`${what} ${file}: empty file`);
}

function longNote(stats: LineStats): string {
  return stats.long ? `, ${stats.long} line(s) longer than ${MAX_LINE_BYTES / 1048576} MiB skipped` : '';
}

function addDetail(w: BundleWriter, src: string, detail: string): void {
  const prev = w.source(src)?.detail;
  w.setSource(src, { status: 'ok', clock: 'file', detail: prev ? `${prev}; ${detail}` : detail });
}

export interface ImportSummary { source: string; file: string; rows: number; skipped: number }

async function importPcap(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:pcap';
  const sink = w.chunkSink(src);
  // classic pcap: cut into chunks verbatim (header scan only); pcapng: parsed, then re-framed as pcap chunks
  const fd = openSync(file, 'r');
  const head = Buffer.alloc(4);
  try { readSync(fd, head, 0, 4, 0); } finally { closeSync(fd); }
  const classic = PcapStreamCutter.isClassicPcap(head);
  const cutter = classic ? new PcapStreamCutter(sink, basename(file)) : null;
  const p = classic ? null : new CaptureStreamParser({ iface: basename(file) });
  const store = classic ? null : new FrameStore(sink);
  try {
    for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
      if (cutter) cutter.push(chunk as Buffer);
      else for (const r of p!.push(chunk as Buffer)) store!.frame(r.iface, r.linktype, r.ts_ns, r.caplen, r.len, r.data);
    }
    cutter?.end();
    p?.end();
    store?.flush();
  } catch (e) {
    if (e instanceof Error && e.name === 'InputError' && !e.message.includes(file)) throw new InputError(`--pcap ${file}: ${e.message}`);
    throw e;
  }
  const format = cutter ? cutter.format : p!.format;
  if (format === null) throw new InputError(`--pcap ${file}: empty or not a pcap/pcapng capture`);
  const malformed = cutter ? cutter.malformed : p!.malformed;
  const rows = cutter ? cutter.frames : store!.frames;
  const indexed = cutter ? cutter.indexed : store!.indexed;
  w.dropped(src, malformed);
  addDetail(w, src, `${format} ${basename(file)}: ${rows} packets, ${indexed} indexed${malformed ? `, ${malformed} malformed records skipped` : ''}`);
  return { source: src, file, rows, skipped: malformed };
}

/** `-o file -ff` writes one file per process, named PREFIX.PID, whose lines carry no pid. */
function pidFromFileName(file: string): number | null {
  const m = /\.(\d+)$/.exec(basename(file));
  return m ? Number(m[1]) : null;
}

const STRACE_NO_PID = /^\d+\.\d+\s/;

async function importStrace(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:strace';
  const { StraceParser } = await import('./sources/strace/parse.js');
  // lines without a pid (one file per process, or the first tracee before `strace -f` saw a second):
  // the pid from the file name, else the lowest pid the log names (the first tracee), else 0
  let unprefixed = 0;
  let minPid = Infinity;
  let stamped = 0;
  for await (const l of boundedLines(file, { long: 0 })) {
    if (STRACE_NO_PID.test(l)) { unprefixed++; stamped++; continue; }
    const m = /^(?:\[pid\s+)?(\d+)\]?\s+\d+\.\d+\s/.exec(l);
    if (m) { stamped++; minPid = Math.min(minPid, Number(m[1])); }
  }
  if (!stamped) throw new InputError(`--strace ${file}: no strace -ttt lines (capture with strace -f -ttt)`);
  const filePid = pidFromFileName(file);
  const defaultPid = filePid ?? (Number.isFinite(minPid) ? minPid : 0);
  const parser = new StraceParser({ source: src });
  let rows = 0;
  const long: LineStats = { long: 0 };
  for await (const l of boundedLines(file, long)) {
    const line = STRACE_NO_PID.test(l) ? `${defaultPid} ${l}` : l;
    for (const e of parser.line(line)) { w.event(e); rows++; }
  }
  w.dropped(src, parser.malformed + long.long);
  const pidNote = unprefixed ? `, ${unprefixed} lines without a pid taken as pid ${defaultPid}${filePid !== null ? ' (file name)' : defaultPid ? ' (lowest pid in the log)' : ' (unknown)'}` : '';
  addDetail(w, src, `strace log ${basename(file)}: ${parser.lines} lines, ${rows} events, ${parser.malformed} lines skipped${longNote(long)}${pidNote}`);
  return { source: src, file, rows, skipped: parser.malformed + long.long };
}

const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Remove `OUT.importing-PID*` files left by an import whose process no longer exists (killed with SIGKILL, or out of memory). */
export function removeStaleImports(out: string): string[] {
  const dir = dirname(resolve(out));
  const prefix = `${basename(out)}.importing-`;
  const removed: string[] = [];
  let names: string[];
  try { names = readdirSync(dir); } catch { return removed; }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const m = /^(\d+)(-wal|-shm|-journal)?$/.exec(n.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || alive(pid)) continue;
    rmSync(join(dir, n), { force: true });
    removed.push(n);
  }
  return removed;
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

export async function runImport(opts: ImportOptions): Promise<number> {
  const ipt = opts.iptablesSave ?? [];
  const inputs = opts.pcap.length + opts.strace.length + (opts.nftMonitor ? 1 : 0) + ipt.length + (opts.conntrack ? 1 : 0) + (opts.watch ? 1 : 0);
  if (!inputs) throw new InputError('import needs at least one of --pcap, --strace, --nft-monitor, --iptables-save, --conntrack, --watch');
  for (const f of ipt) mustRead(f, '--iptables-save');
  for (const f of opts.pcap) mustRead(f, '--pcap');
  for (const f of opts.strace) mustRead(f, '--strace');
  if (opts.nftMonitor) mustRead(opts.nftMonitor, '--nft-monitor');
  if (opts.nftRuleset) mustRead(opts.nftRuleset, '--nft-ruleset');
  if (opts.conntrack) mustRead(opts.conntrack, '--conntrack');
  if (opts.watch) mustRead(opts.watch, '--watch');

  if (existsSync(opts.out) && !opts.force) throw new InputError(`${opts.out} already exists; choose another --out, or --force to replace it`);
  // built beside --out and renamed over it only once complete: a failed import never costs the file it was to replace
  const tmp = `${opts.out}.importing-${process.pid}`;
  removeStaleImports(opts.out);
  // killed by a signal: the half-built bundle goes with the process (SIGKILL cannot be caught: the
  // next import of the same --out removes what a dead process left, see removeStaleImports). The
  // handlers come first: until one is installed, a signal kills the process outright.
  const onSignal = (sig: NodeJS.Signals) => {
    removeBundleFiles(tmp);
    for (const s of STOP_SIGNALS) process.removeListener(s, onSignal);
    process.kill(process.pid, sig);
  };
  for (const s of STOP_SIGNALS) process.once(s, onSignal);
  let w: BundleWriter;
  try { w = new BundleWriter(tmp, { createdBy: 'import', overwrite: true }); } catch (e) {
    for (const s of STOP_SIGNALS) process.removeListener(s, onSignal);
    removeBundleFiles(tmp);
    throw e;
  }
  const summaries: ImportSummary[] = [];
  let failed: unknown = null;
  try {
    w.setMeta(META_KEYS.argv, JSON.stringify(process.argv.slice(2)));
    w.setMeta(META_KEYS.hostname, hostname());
    for (const f of opts.pcap) summaries.push(await importPcap(w, f));
    for (const f of opts.strace) summaries.push(await importStrace(w, f));
    if (opts.nftMonitor) summaries.push(await importNft(w, opts.nftMonitor, opts.nftRuleset));
    if (ipt.length) summaries.push(await importIptablesSave(w, ipt));
    if (opts.conntrack) summaries.push(await importConntrack(w, opts.conntrack));
    if (opts.watch) summaries.push(await importWatch(w, opts.watch));
  } catch (e) {
    failed = e;
  }
  const receipt = ['import:nft', 'import:conntrack'].filter((n) => w.source(n));
  if (receipt.length) w.setMeta(META_KEYS.receiptStamped, JSON.stringify(receipt));
  // an import's time range is its data's
  const range = w.timeRange();
  if (range) {
    w.setMeta(META_KEYS.startedNs, String(range.start));
    w.endedNs = range.end;
  }
  for (const s of STOP_SIGNALS) process.removeListener(s, onSignal);
  try { w.close(); } catch (e) { failed ??= e; }
  if (failed) {
    // a half-built import is worth nothing: remove it so the corrected command can run again
    removeBundleFiles(tmp);
    throw failed;
  }
  renameSync(tmp, opts.out);
  for (const s of summaries) process.stderr.write(`imported ${s.file}: ${s.rows} rows as ${s.source}${s.skipped ? ` (${s.skipped} skipped)` : ''}\n`);
  process.stderr.write(`wrote ${opts.out}; next: rolltrace analyze ${opts.out}\n`);
  return 0;
}


/** Read a whole text document (not lines: `nft -j list ruleset`), bounded, refusing binary content. */
function readDocument(file: string, what: string): string {
  refuseBinary(file, what);
  const size = statSync(file).size;
  if (size > MAX_DOCUMENT_BYTES) throw new InputError(`${what} ${file}: ${size} bytes, more than the ${MAX_DOCUMENT_BYTES / 1048576} MiB import reads`);
  return readFileSync(file).toString('utf8');
}

async function importNft(w: BundleWriter, file: string, rulesetFile?: string): Promise<ImportSummary> {
  const src = 'import:nft';
  const [{ parseMonitorLine, summarizeBurst, isKubeRelevantTable }, { reduceNftRuleset }, { diffPaths, diffReductions, emptyReduction }, { QUIET_MS, MAX_BURST_MS }, { NftReplayModel, stampLines }] = await Promise.all([
    import('./sources/nftables/monitor.js'), import('./sources/nftables/nft-json.js'), import('./sources/nftables/reduce.js'),
    import('./sources/nftables/index.js'), import('./import/nft-replay.js'),
  ]);
  let model = new NftReplayModel();
  if (rulesetFile) {
    const j = parseJsonBounded(readDocument(rulesetFile, '--nft-ruleset'));
    if (!j.ok) throw new InputError(`--nft-ruleset ${rulesetFile}: ${j.why === 'too-deep' ? `JSON nested deeper than ${MAX_JSON_DEPTH} levels` : 'not JSON'} (capture with nft -j list ruleset)`);
    const doc = j.v;
    try { model = NftReplayModel.fromRuleset(doc); } catch {
      throw new InputError(`--nft-ruleset ${rulesetFile}: no "nftables" array (capture with nft -j list ruleset)`);
    }
  }
  const long: LineStats = { long: 0 };
  const stamped = stampLines(await readBoundedLines(file, '--nft-monitor', long));
  if (!stamped) {
    throw new InputError(`--nft-monitor ${file}: no timestamps; capture with: nft -j monitor | ts '%.s' > FILE (moreutils), or prefix each line with date +%s.%N`);
  }
  let malformed = 0;
  let records = 0;
  let unknown = 0;
  let xt = 0;
  let bursts = 0;
  let snapshots = 0;
  let changes = 0;
  let pathChanges = 0;
  let prev = reduceNftRuleset(model.toRuleset());
  if (rulesetFile) {
    w.nftSnapshot({ ts_ns: stamped[0]!.ts, format: 'nft-json', reason: 'start', ruleset: JSON.stringify(model.toRuleset()) }, src);
    snapshots++;
  } else prev = emptyReduction();
  let burst: { first: number; last: number; recs: Parameters<typeof summarizeBurst>[0] } | null = null;
  const close = (): void => {
    const b = burst;
    if (!b) return;
    burst = null;
    bursts++;
    const attrs = summarizeBurst(b.recs);
    w.event(ev('rules-changed', b.first, src, attrs.tables.join(',') || null, attrs));
    const ruleset = model.toRuleset();
    w.nftSnapshot({ ts_ns: b.last, format: 'nft-json', reason: 'burst', ruleset: JSON.stringify(ruleset) }, src);
    snapshots++;
    const next = reduceNftRuleset(ruleset);
    for (const e of diffReductions(prev, next, { ts_ns: b.first, clock: 'file' })) { w.event({ ...e, source: src }); changes++; }
    for (const e of diffPaths(prev, next, { ts_ns: b.first, clock: 'file' })) { w.event({ ...e, source: src }); pathChanges++; }
    prev = next;
  };
  for (const { ts, body } of stamped) {
    const p = parseMonitorLine(body);
    if (p.t === 'noise') continue;
    if (p.t === 'malformed') { malformed++; continue; }
    if (burst && ((ts - burst.last) / 1e6 > QUIET_MS || (ts - burst.first) / 1e6 >= MAX_BURST_MS)) close();
    records++;
    const r = model.apply(p.doc);
    if (r.unknown) unknown++;
    if (r.xt) xt++;
    if (!isKubeRelevantTable(p.r.table)) continue;
    if (!burst) burst = { first: ts, last: ts, recs: [] };
    burst.last = ts;
    burst.recs.push(p.r);
  }
  close();
  if (!records && malformed) throw new InputError(`--nft-monitor ${file}: no nft -j monitor JSON lines (capture with nft -j monitor, not plain nft monitor)`);
  malformed += long.long;
  w.dropped(src, malformed);
  const notes = [
    `nft monitor ${basename(file)}: ${records} records, ${bursts} bursts (${QUIET_MS} ms quiet gap), ${changes} endpoint-rule changes (${pathChanges} per-path), ${snapshots} replayed snapshots`,
    rulesetFile ? `replayed onto ${basename(rulesetFile)}` : 'replayed onto an empty ruleset (no --nft-ruleset: rules that existed before the capture are unknown)',
  ];
  if (malformed) notes.push(`${malformed} malformed lines skipped${long.long ? ` (${long.long} longer than ${MAX_LINE_BYTES / 1048576} MiB)` : ''}`);
  if (unknown) notes.push(`${unknown} records named objects or handles the model did not hold`);
  if (xt || model.hasIptablesKube()) notes.push('iptables-mode (iptables-nft xt) rules are opaque in nft monitor: endpoint changes need iptables-save snapshots (--iptables-save)');
  addDetail(w, src, notes.join('; '));
  return { source: src, file, rows: records, skipped: malformed };
}

async function importConntrack(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:conntrack';
  const { parseConntrackLine } = await import('./sources/conntrack/parse.js');
  let rows = 0;
  let malformed = 0;
  let nostamp = 0;
  const long: LineStats = { long: 0 };
  for await (const l of boundedLines(file, long)) {
    const p = parseConntrackLine(l);
    if (p.t === 'row') { w.conntrack(p.row, src); rows++; } else if (p.t === 'malformed') {
      malformed++;
      if (/^\s*\[(NEW|UPDATE|DESTROY)\]/.test(l)) nostamp++;
    }
  }
  if (!rows && nostamp) throw new InputError(`--conntrack ${file}: no timestamps; capture with conntrack -E -o timestamp,extended`);
  if (!rows && malformed) throw new InputError(`--conntrack ${file}: no conntrack -E lines`);
  w.dropped(src, malformed + long.long);
  addDetail(w, src, `conntrack log ${basename(file)}: ${rows} rows${malformed ? `, ${malformed} malformed lines skipped` : ''}${longNote(long)}; stamped by conntrack on receipt of the netlink event`);
  return { source: src, file, rows, skipped: malformed + long.long };
}

async function importWatch(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:kube';
  const [{ parseWatchLines, deriveKubeEvents, emptyKubeState }, { splitConcatenatedJson, plainObjectsToEvents, objectInstantNs, normalizeEpoch }] = await Promise.all([
    import('./sources/kube/derive.js'), import('./import/watch.js'),
  ]);
  const long: LineStats = { long: 0 };
  const text = (await readBoundedLines(file, '--watch', long)).join('\n');
  const firstLine = text.split('\n').find((l) => l.trim() !== '')?.trim() ?? '';
  if (!firstLine.startsWith('{')) throw new InputError(`--watch ${file}: not JSON (expected watch event JSON lines or kubectl get --watch -o json output)`);
  let jsonLines = false;
  const first = parseJsonBounded(firstLine);
  if (first.ok) { const j = first.v as { type?: unknown; object?: unknown } | null; jsonLines = typeof j?.type === 'string' && typeof j?.object === 'object'; }
  let evs: Array<{ type: string; object: import('./sources/kube/derive.js').KubeObject; ts: number | null }>;
  let bad: number;
  let form: string;
  if (jsonLines) {
    const p = parseWatchLines(text);
    evs = p.events.map((e) => ({ type: e.type, object: e.object, ts: e.ts !== undefined ? normalizeEpoch(e.ts) : objectInstantNs(e.object) }));
    bad = p.bad;
    form = 'watch JSON lines';
  } else {
    const s = splitConcatenatedJson(text);
    const p = plainObjectsToEvents(s.values);
    evs = p.events;
    bad = s.bad + p.bad;
    form = 'kubectl --watch -o json objects (ADDED at first sight, MODIFIED after: a deletion shows as MODIFIED, add --output-watch-events to see DELETED; instants from metadata, second precision)';
  }
  bad += long.long;
  if (!evs.length) throw new InputError(`--watch ${file}: no watch events or Kubernetes objects${longNote(long)}`);
  const noTs = evs.find((e) => e.ts === null);
  if (noTs) {
    const md = noTs.object.metadata ?? {};
    throw new InputError(`--watch ${file}: ${noTs.object.kind ?? 'object'} ${md.namespace ?? ''}/${md.name ?? ''} has no "ts" and no timestamp in its metadata`);
  }
  let state = emptyKubeState();
  let rows = 0;
  let derived = 0;
  for (const e of evs) {
    const ts = e.ts!;
    const o = e.object;
    const md = o.metadata ?? {};
    if (e.type !== 'BOOKMARK' && e.type !== 'ERROR') {
      w.k8sObject({
        ts_ns: ts, kind: o.kind ?? '', namespace: md.namespace ?? null, name: md.name ?? null, uid: md.uid ?? null,
        resource_version: md.resourceVersion ?? null, event_type: e.type as K8sObjectRow['event_type'], object: JSON.stringify(o),
      }, src);
      rows++;
    }
    const r = deriveKubeEvents(state, { type: e.type, object: o }, ts, src);
    state = r.state;
    for (const x of r.events) { w.event(x); derived++; }
  }
  w.dropped(src, bad);
  addDetail(w, src, `${form} ${basename(file)}: ${rows} objects, ${derived} derived events${bad ? `, ${bad} malformed entries skipped` : ''}${longNote(long)}`);
  return { source: src, file, rows, skipped: bad };
}

/**
 * `--iptables-save F...`: kube-proxy iptables-mode snapshots, one per file, each stamped by its first line
 * (`date +%s.%N` or an ISO instant: `{ date +%s.%N; iptables-save; } > snap-N.txt`). Consecutive snapshots
 * are reduced and diffed like the live source's: endpoint-rule and path-rule events, clock file.
 */
async function importIptablesSave(w: BundleWriter, files: string[]): Promise<ImportSummary> {
  const src = 'import:iptables';
  const [{ parseIptablesSave, reduceIptablesSave, hasKubeChains }, { diffPaths, diffReductions }, { splitStamp }] = await Promise.all([
    import('./sources/nftables/iptables.js'), import('./sources/nftables/reduce.js'), import('./import/nft-replay.js'),
  ]);
  const snaps = files.map((file) => {
    const text = readDocument(file, '--iptables-save');
    const first = text.split('\n').find((l) => l.trim() !== '') ?? '';
    const st = splitStamp(first.trim());
    if (st.ts === null || st.body.trim() !== '') throw new InputError(`--iptables-save ${file}: the first line must be a timestamp; capture with: { date +%s.%N; iptables-save; } > FILE`);
    const parsed = parseIptablesSave(text.slice(text.indexOf(first) + first.length));
    if (!hasKubeChains(parsed)) throw new InputError(`--iptables-save ${file}: no KUBE- chains (not kube-proxy iptables-mode rules)`);
    return { file, ts: st.ts, text, parsed };
  }).sort((a, b) => a.ts - b.ts);
  let prev = null as ReturnType<typeof reduceIptablesSave> | null;
  let changes = 0;
  let malformed = 0;
  for (const s of snaps) {
    w.nftSnapshot({ ts_ns: s.ts, format: 'iptables-save', reason: prev ? 'poll' : 'start', ruleset: s.text }, src);
    malformed += s.parsed.malformed;
    const next = reduceIptablesSave(s.parsed, 'iptables');
    if (prev) for (const e of [...diffReductions(prev, next, { ts_ns: s.ts, clock: 'file' }), ...diffPaths(prev, next, { ts_ns: s.ts, clock: 'file' })]) { w.event({ ...e, source: src }); changes++; }
    prev = next;
  }
  w.dropped(src, malformed);
  addDetail(w, src, `${snaps.length} iptables-save snapshot(s), ${changes} rule changes (each stamped at its snapshot: a change happened at most one snapshot interval earlier)${malformed ? `, ${malformed} malformed lines skipped` : ''}`);
  return { source: src, file: files.join(', '), rows: snaps.length, skipped: malformed };
}

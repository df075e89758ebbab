/**
 * `rolltrace import`: build a bundle from artifacts captured by hand — tcpdump -w / Wireshark pcapng,
 * strace -f -ttt logs, `nft -j monitor` output, conntrack -E logs, JSON lines of watch events — so people
 * who arrive with a pcap attached to an incident get an analysis without having run the recorder.
 * Each artifact goes through the same pure parsers the live sources use.
 */
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { basename } from 'node:path';
import { hostname } from 'node:os';
import { InputError } from '../schemas/errors.js';
import { META_KEYS } from '../schemas/rows.js';
import { BundleWriter } from './bundle-writer.js';
import { CaptureStreamParser } from './decode/pcapfile.js';
import { decodeFrame } from './decode/packet.js';

export interface ImportOptions {
  out: string;
  pcap: string[];
  strace: string[];
  nftMonitor?: string;
  nftRuleset?: string;
  conntrack?: string;
  watch?: string;
  force?: boolean;
}

function mustRead(file: string, what: string): void {
  if (!existsSync(file)) throw new InputError(`${what} ${file}: no such file`);
  if (!statSync(file).isFile()) throw new InputError(`${what} ${file}: not a regular file`);
}

async function* lines(file: string): AsyncIterableIterator<string> {
  const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const l of rl) yield l;
}

function addDetail(w: BundleWriter, src: string, detail: string): void {
  const prev = w.source(src)?.detail;
  w.setSource(src, { status: 'ok', clock: 'file', detail: prev ? `${prev}; ${detail}` : detail });
}

export interface ImportSummary { source: string; file: string; rows: number; skipped: number }

async function importPcap(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:pcap';
  const p = new CaptureStreamParser({ iface: basename(file) });
  let rows = 0;
  const emit = (recs: ReturnType<CaptureStreamParser['push']>) => {
    for (const r of recs) {
      const d = decodeFrame(r.linktype, r.data, r.caplen, r.len);
      w.packet({ ...d, ts_ns: r.ts_ns, iface: r.iface, data: r.data }, src);
      rows++;
    }
  };
  for await (const chunk of createReadStream(file)) emit(p.push(chunk as Buffer));
  p.end();
  if (p.format === null) throw new InputError(`--pcap ${file}: empty or not a pcap/pcapng capture`);
  w.dropped(src, p.malformed);
  addDetail(w, src, `${p.format} ${basename(file)}: ${rows} packets${p.malformed ? `, ${p.malformed} malformed records skipped` : ''}`);
  return { source: src, file, rows, skipped: p.malformed };
}

/** Parser hooks implemented by the live sources' pure parsers (loaded lazily). */
async function importStrace(w: BundleWriter, file: string): Promise<ImportSummary> {
  const src = 'import:strace';
  const { StraceParser } = await import('./sources/strace/parse.js');
  const parser = new StraceParser({ source: src });
  let rows = 0;
  for await (const l of lines(file)) {
    for (const e of parser.push(l)) { w.event(e); rows++; }
  }
  for (const e of parser.end()) { w.event(e); rows++; }
  w.dropped(src, parser.malformed);
  addDetail(w, src, `strace log ${basename(file)}: ${rows} events, ${parser.malformed} lines skipped`);
  return { source: src, file, rows, skipped: parser.malformed };
}

export async function runImport(opts: ImportOptions): Promise<number> {
  const inputs = opts.pcap.length + opts.strace.length + (opts.nftMonitor ? 1 : 0) + (opts.conntrack ? 1 : 0) + (opts.watch ? 1 : 0);
  if (!inputs) throw new InputError('import needs at least one of --pcap, --strace, --nft-monitor, --conntrack, --watch');
  for (const f of opts.pcap) mustRead(f, '--pcap');
  for (const f of opts.strace) mustRead(f, '--strace');
  if (opts.nftMonitor) mustRead(opts.nftMonitor, '--nft-monitor');
  if (opts.nftRuleset) mustRead(opts.nftRuleset, '--nft-ruleset');
  if (opts.conntrack) mustRead(opts.conntrack, '--conntrack');
  if (opts.watch) mustRead(opts.watch, '--watch');

  const w = new BundleWriter(opts.out, { createdBy: 'import', overwrite: !!opts.force });
  const summaries: ImportSummary[] = [];
  let failed: unknown = null;
  try {
    w.setMeta(META_KEYS.argv, JSON.stringify(process.argv.slice(2)));
    w.setMeta(META_KEYS.hostname, hostname());
    for (const f of opts.pcap) summaries.push(await importPcap(w, f));
    for (const f of opts.strace) summaries.push(await importStrace(w, f));
    if (opts.nftMonitor) summaries.push(await importNft(w, opts.nftMonitor, opts.nftRuleset));
    if (opts.conntrack) summaries.push(await importConntrack(w, opts.conntrack));
    if (opts.watch) summaries.push(await importWatch(w, opts.watch));
  } catch (e) {
    failed = e;
  }
  // an import's time range is its data's
  const range = w.timeRange();
  if (range) {
    w.setMeta(META_KEYS.startedNs, String(range.start));
    w.endedNs = range.end;
  }
  w.close();
  if (failed) throw failed;
  for (const s of summaries) process.stderr.write(`imported ${s.file}: ${s.rows} rows as ${s.source}${s.skipped ? ` (${s.skipped} skipped)` : ''}\n`);
  process.stderr.write(`wrote ${opts.out}; next: rolltrace analyze ${opts.out}\n`);
  return 0;
}

// nft, conntrack and watch importers: filled in below once their parsers exist
async function importNft(_w: BundleWriter, file: string, _ruleset?: string): Promise<ImportSummary> {
  throw new InputError(`--nft-monitor ${file}: not supported yet`);
}
async function importConntrack(_w: BundleWriter, file: string): Promise<ImportSummary> {
  throw new InputError(`--conntrack ${file}: not supported yet`);
}
async function importWatch(_w: BundleWriter, file: string): Promise<ImportSummary> {
  throw new InputError(`--watch ${file}: not supported yet`);
}
void readFileSync;

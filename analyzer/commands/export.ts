/** `rolltrace export BUNDLE (--pcap OUT | --perfetto OUT)`. */
import { rmSync, writeFileSync } from 'node:fs';
import { InputError } from '../../schemas/errors.js';
import type { Analysis } from '../../schemas/analysis.js';
import { BundleReader } from '../bundle-reader.js';
import { analyzeBundle, asInputError } from '../analyze.js';
import { clean } from '../util.js';
import { PacketAnnotator, writePcapng, type PcapngResult } from '../export/pcapng.js';
import { buildPerfetto } from '../export/perfetto.js';

export interface ExportOptions { pcap?: string; perfetto?: string }

async function analysisOrNull(reader: BundleReader): Promise<Analysis | null> {
  try {
    return await analyzeBundle(reader);
  } catch (e) {
    if ((e as Error)?.name === 'InputError') throw e;
    process.stderr.write(`rolltrace: export: analysis failed (${clean((e as Error)?.message ?? e, 200)}); exporting without annotations\n`);
    return null;
  }
}

export async function exportPcap(reader: BundleReader, out: string, analysis?: Analysis | null): Promise<PcapngResult> {
  const a = analysis === undefined ? await analysisOrNull(reader) : analysis;
  try {
    return writePcapng(out, reader.packets(), new PacketAnnotator(a));
  } catch (e) {
    // nothing half-written is left behind: a truncated pcapng would open in Wireshark as if whole
    rmSync(out, { force: true });
    if ((e as NodeJS.ErrnoException).code && /^E[A-Z]+$/.test((e as NodeJS.ErrnoException).code!)) throw new InputError(`cannot write ${out}: ${(e as Error).message}`);
    throw asInputError(e, reader.file);
  }
}

export async function exportPerfetto(reader: BundleReader, out: string, analysis?: Analysis | null): Promise<number> {
  const a = analysis === undefined ? await analysisOrNull(reader) : analysis;
  let trace: ReturnType<typeof buildPerfetto>;
  try { trace = buildPerfetto(a, reader); } catch (e) { throw asInputError(e, reader.file); }
  try {
    writeFileSync(out, JSON.stringify(trace));
  } catch (e) {
    rmSync(out, { force: true });
    throw new InputError(`cannot write ${out}: ${(e as Error).message}`);
  }
  return trace.traceEvents.length;
}

export async function runExport(file: string, opts: ExportOptions): Promise<number> {
  if (!opts.pcap && !opts.perfetto) throw new InputError('export needs --pcap OUT or --perfetto OUT');
  const reader = await BundleReader.open(file).catch((e: unknown) => { throw asInputError(e, file); });
  try {
    const a = await analysisOrNull(reader);
    if (opts.pcap) {
      const r = await exportPcap(reader, opts.pcap, a);
      const skipped = Object.entries(r.skipped).map(([why, n]) => `${n} ${why}`).join(', ');
      process.stdout.write(`pcapng: ${opts.pcap}: ${r.packets} packets on ${r.interfaces.length} interface(s) (${r.interfaces.map((i) => clean(i.name, 80)).join(', ') || 'none'}), ${r.commented} annotated${skipped ? `; skipped rows pcapng cannot hold: ${skipped}` : ''}\n`);
    }
    if (opts.perfetto) {
      const n = await exportPerfetto(reader, opts.perfetto, a);
      process.stdout.write(`perfetto: ${opts.perfetto}: ${n} trace events (open in https://ui.perfetto.dev or chrome://tracing)\n`);
    }
  } finally {
    reader.close();
  }
  return 0;
}

/** `rolltrace export BUNDLE (--pcap OUT | --perfetto OUT)`. */
import { writeFileSync } from 'node:fs';
import { InputError } from '../../schemas/errors.js';
import type { Analysis } from '../../schemas/analysis.js';
import { BundleReader } from '../bundle-reader.js';
import { analyzeBundle } from '../analyze.js';
import { PacketAnnotator, writePcapng, type PcapngResult } from '../export/pcapng.js';
import { buildPerfetto } from '../export/perfetto.js';

export interface ExportOptions { pcap?: string; perfetto?: string }

async function analysisOrNull(reader: BundleReader): Promise<Analysis | null> {
  try {
    return await analyzeBundle(reader);
  } catch (e) {
    if ((e as Error)?.name === 'InputError') throw e;
    process.stderr.write(`rolltrace: export: analysis failed (${(e as Error).message.split('\n')[0]}); exporting without annotations\n`);
    return null;
  }
}

export async function exportPcap(reader: BundleReader, out: string, analysis?: Analysis | null): Promise<PcapngResult> {
  const a = analysis === undefined ? await analysisOrNull(reader) : analysis;
  try {
    return writePcapng(out, reader.packets(), new PacketAnnotator(a));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code && /^E[A-Z]+$/.test((e as NodeJS.ErrnoException).code!)) throw new InputError(`cannot write ${out}: ${(e as Error).message}`);
    throw e;
  }
}

export async function exportPerfetto(reader: BundleReader, out: string, analysis?: Analysis | null): Promise<number> {
  const a = analysis === undefined ? await analysisOrNull(reader) : analysis;
  const trace = buildPerfetto(a, reader);
  try {
    writeFileSync(out, JSON.stringify(trace));
  } catch (e) {
    throw new InputError(`cannot write ${out}: ${(e as Error).message}`);
  }
  return trace.traceEvents.length;
}

export async function runExport(file: string, opts: ExportOptions): Promise<number> {
  if (!opts.pcap && !opts.perfetto) throw new InputError('export needs --pcap OUT or --perfetto OUT');
  const reader = await BundleReader.open(file);
  try {
    const a = await analysisOrNull(reader);
    if (opts.pcap) {
      const r = await exportPcap(reader, opts.pcap, a);
      process.stdout.write(`pcapng: ${opts.pcap}: ${r.packets} packets on ${r.interfaces.length} interface(s) (${r.interfaces.map((i) => i.name).join(', ') || 'none'}), ${r.commented} annotated\n`);
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

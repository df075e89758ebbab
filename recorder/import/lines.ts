/**
 * Text inputs of `rolltrace import` read line by line in bounded memory. A line longer than
 * MAX_LINE_BYTES is skipped without being held whole (and counted: the caller reports it as dropped);
 * before this bound, one 50 MB line of `[` in a --watch file took 2.8 GB.
 */
import { closeSync, createReadStream, openSync, readSync, statSync } from 'node:fs';
import { InputError } from '../../schemas/errors.js';

/** Longest text line import reads: 8 MiB (a Kubernetes object is at most ~1.5 MiB in etcd, 3 MiB per API request). */
export const MAX_LINE_BYTES = 8 * 1024 * 1024;
/** Largest `nft -j list ruleset` document (one JSON value, not lines) import reads. */
export const MAX_DOCUMENT_BYTES = 64 * 1024 * 1024;

export interface LineStats { /** lines skipped for being longer than the limit */ long: number }

/** Lines of a file without their `\n` (and a `\r` before it); lines longer than `max` bytes are skipped and counted in `stats.long`. */
export async function* boundedLines(file: string, stats: LineStats, max = MAX_LINE_BYTES): AsyncIterableIterator<string> {
  let parts: Buffer[] = [];
  let len = 0;
  let skipping = false;
  const take = (b: Buffer): string => {
    const all = parts.length ? Buffer.concat([...parts, b]) : b;
    parts = []; len = 0;
    const s = all.toString('utf8');
    return s.endsWith('\r') ? s.slice(0, -1) : s;
  };
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 16 })) {
    const buf = chunk as Buffer;
    let start = 0;
    for (;;) {
      const nl = buf.indexOf(0x0a, start);
      const end = nl < 0 ? buf.length : nl;
      const piece = buf.subarray(start, end);
      if (!skipping) {
        if (len + piece.length > max) { skipping = true; parts = []; len = 0; stats.long++; }
        else if (nl >= 0) yield take(piece);
        else if (piece.length) { parts.push(Buffer.from(piece)); len += piece.length; }
      }
      if (nl < 0) break;
      if (skipping) skipping = false;
      start = nl + 1;
    }
  }
  if (!skipping && len > 0) yield take(Buffer.alloc(0));
}

/** Largest text input held in memory whole (`--nft-monitor`, `--watch`: replayed or sorted as a whole). */
export const MAX_HELD_TEXT_BYTES = 256 * 1024 * 1024;

/** Every line of a text file (bounded as above), refusing binary content (a pcap given to a text option) and files over MAX_HELD_TEXT_BYTES. */
export async function readBoundedLines(file: string, what: string, stats: LineStats, max = MAX_LINE_BYTES): Promise<string[]> {
  refuseBinary(file, what);
  const size = statSync(file).size;
  if (size > MAX_HELD_TEXT_BYTES) throw new InputError(`${what} ${file}: ${size} bytes, more than the ${MAX_HELD_TEXT_BYTES / 1048576} MiB import holds in memory; split it by time`);
  const out: string[] = [];
  for await (const l of boundedLines(file, stats, max)) out.push(l);
  return out;
}

export function refuseBinary(file: string, what: string): void {
  const head = Buffer.alloc(4096);
  const fd = openSync(file, 'r');
  let n: number;
  try { n = readSync(fd, head, 0, head.length, 0); } finally { closeSync(fd); }
  if (head.subarray(0, n).includes(0)) throw new InputError(`${what} ${file}: binary file, expected text`);
}

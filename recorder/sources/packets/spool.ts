/**
 * tcpdump's capture spooled through files: `tcpdump -w DIR/cap.pcap -C MB` writes as `tcpdump -w FILE`
 * does (stdio-buffered 4 KiB writes to the page cache, never waiting for a reader), rotating to cap.pcap1,
 * cap.pcap2, ... every MB megabytes; this reader follows the files in order, hands their bytes over as
 * one classic pcap stream (the header of every file after the first is dropped), and deletes each file
 * once read past its end. A pipe would hold 64 KiB: a recorder busy for a few ms (a commit, the other
 * sources, a loaded machine) then stops tcpdump, whose ring overflows at a few hundred kpps; a file
 * absorbs the burst and the recorder catches up after it.
 */
import { existsSync, rmSync, statSync } from 'node:fs';
import { open, unlink, type FileHandle } from 'node:fs/promises';

/** the rotation size passed to tcpdump -C (millions of bytes) */
export const SPOOL_FILE_MB = 16;
const READ_BYTES = 1 << 20;
/**
 * the most complete files left waiting (SPOOL_FILE_MB each): a recorder slower than the traffic for long
 * would otherwise fill the node's disk; past it the oldest waiting files are deleted unread (counted)
 */
export const SPOOL_MAX_WAITING = 32;
/** at the end of the data: wait this long before reading again (frames gather meanwhile) */
const IDLE_MS = 10;

/** file k of tcpdump -C's rotation of `base` */
export const spoolFile = (base: string, k: number): string => (k === 0 ? base : `${base}${k}`);

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export class SpoolReader {
  /** bytes handed over */
  bytes = 0;
  /** bytes of files deleted unread (the backlog past maxWaiting files) */
  skippedBytes = 0;
  skippedFiles = 0;
  private stopped = false;
  readonly done: Promise<void>;

  /**
   * `exited()`: tcpdump has exited (its files are complete). `onData` receives each read (a reused
   * buffer: copy what is kept) and may throw to end the reading.
   */
  constructor(private base: string, private exited: () => boolean, private onData: (b: Buffer) => void, private onError: (e: Error) => void,
    private maxWaiting = SPOOL_MAX_WAITING) {
    this.done = this.run().catch((e: Error) => this.onError(e));
  }

  /** stop reading (what was not read stays in the files) */
  stop(): void { this.stopped = true; }

  /**
   * Before reading file k: when more than maxWaiting complete files wait behind it (tcpdump writes the
   * newest), delete the oldest unread ones; returns the file to read next.
   */
  private shed(k: number): number {
    if (k === 0) return 0; // the first file carries the stream's header
    let newest = k;
    while (existsSync(spoolFile(this.base, newest + 1))) newest++;
    // files k .. newest-1 are complete (tcpdump moved past them)
    let next = k;
    while (newest - next > this.maxWaiting) {
      const f = spoolFile(this.base, next);
      try { this.skippedBytes += Math.max(0, statSync(f).size - 24); rmSync(f, { force: true }); this.skippedFiles++; } catch { /* gone */ }
      next++;
    }
    return next;
  }

  private async run(): Promise<void> {
    const buf = Buffer.allocUnsafe(READ_BYTES);
    for (let k = 0; !this.stopped; k++) {
      k = this.shed(k);
      const name = spoolFile(this.base, k);
      let fh: FileHandle | null = null;
      while (!this.stopped && !(fh = await open(name, 'r').catch(() => null))) {
        if (this.exited()) return; // tcpdump ended without this file
        await sleep(IDLE_MS);
      }
      if (!fh) return;
      try {
        // every file starts with the same 24-byte pcap header: only the first file's is passed on
        let skip = k === 0 ? 0 : 24;
        let pos = 0;
        const give = (n: number) => {
          pos += n;
          const drop = Math.min(skip, n);
          skip -= drop;
          if (n > drop) { this.bytes += n - drop; this.onData(buf.subarray(drop, n)); }
        };
        while (!this.stopped) {
          const { bytesRead } = await fh.read(buf, 0, READ_BYTES, pos);
          if (bytesRead > 0) {
            give(bytesRead);
            if (bytesRead === READ_BYTES) continue;
            await sleep(IDLE_MS);
            continue;
          }
          // at the end of this file: complete once tcpdump moved to the next one (it closes a file before
          // opening the next) or exited; read once more, then go on
          const ended = this.exited();
          if (!ended && !existsSync(spoolFile(this.base, k + 1))) { await sleep(IDLE_MS); continue; }
          const { bytesRead: more } = await fh.read(buf, 0, READ_BYTES, pos);
          if (more > 0) { give(more); continue; }
          break;
        }
      } finally {
        await fh.close();
      }
      if (this.stopped) return;
      await unlink(name).catch(() => {});
      if (this.exited() && !existsSync(spoolFile(this.base, k + 1))) return;
    }
  }
}

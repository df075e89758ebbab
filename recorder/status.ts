/**
 * The record command's live status: on a TTY one line redrawn with \r once a second; otherwise one
 * plain line every 5 s; nothing with --quiet. log() prints a line above the status line.
 */
export interface StatusSnapshot {
  elapsedS: number;
  /** per running source: events written, dropped, and the source's own note */
  sources: Array<{ name: string; events: number; dropped: number; extra?: string; status?: string }>;
}

export type StatusMode = 'tty' | 'lines' | 'quiet';

/** One status line (pure, for tests). */
export function formatStatus(s: StatusSnapshot): string {
  const parts = [`rolltrace ${s.elapsedS.toFixed(0)}s`];
  for (const x of s.sources) {
    if (x.status === 'failed') { parts.push(`${x.name} FAILED`); continue; }
    if (x.name === 'packets') parts.push(`packets ${x.events} (kernel drops ${x.dropped})`);
    else if (x.name === 'probe') parts.push(`probe ${x.extra ?? `${x.events}`}`);
    else parts.push(`${x.name} ${x.events}${x.dropped ? ` (dropped ${x.dropped})` : ''}`);
  }
  return parts.join(' | ');
}

export class StatusLine {
  private timer: NodeJS.Timeout | null = null;
  private shown = false;
  private lastLine = 0;

  constructor(readonly mode: StatusMode, private snapshot: () => StatusSnapshot, private out: NodeJS.WriteStream = process.stderr) {}

  start(): void {
    if (this.mode === 'quiet') return;
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  private tick(): void {
    const line = formatStatus(this.snapshot());
    if (this.mode === 'tty') {
      const cols = this.out.columns ?? 120;
      this.out.write(`\r\x1b[2K${line.slice(0, Math.max(20, cols - 1))}`);
      this.shown = true;
    } else if (Date.now() - this.lastLine >= 5000) {
      this.lastLine = Date.now();
      this.out.write(`${line}\n`);
    }
  }

  /** print a line above the status line (always, even with --quiet: these are warnings) */
  log(line: string): void {
    if (this.mode === 'tty' && this.shown) this.out.write('\r\x1b[2K');
    this.out.write(`${line}\n`);
    if (this.mode === 'tty' && this.shown) this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.mode === 'tty' && this.shown) this.out.write('\r\x1b[2K');
    this.shown = false;
  }
}

/**
 * conntrack source: `conntrack -E -o timestamp,extended,id -e NEW,UPDATE,DESTROY` in the recorder's
 * network namespace (with `record --netns`: in that one, through `nsenter --net=PATH`), parsed (parse.ts) into ConntrackRow: the original tuple (client -> service VIP)
 * and the reply tuple (backend after DNAT -> client), the kernel's own word on which backend a
 * connection went to. A refused connection reads NEW [UNREPLIED] then DESTROY CLOSE [UNREPLIED].
 *
 * Clock: conntrack stamps each event (gettimeofday, µs) when it reads it from the netlink socket, i.e.
 * on receipt, microseconds after the kernel's event; it flushes one line per event on a pipe (verified
 * with conntrack-tools 1.4.7). net.netfilter.nf_conntrack_timestamp is NOT changed: it only adds
 * start/stop times (second resolution in the text output) to DESTROY events.
 * The netlink buffer is raised (-b) so bursts are not lost; "We have hit ENOBUFS" warnings count as drops.
 * The kernel tracks connections in a netns only once a ruleset there uses conntrack (kube-proxy's does).
 */
import { nowNs } from '../../clock.js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { netnsExec, netnsNote } from '../../netns.js';
import { parseConntrackLine } from './parse.js';

export const NETLINK_BUFFER = 16 * 1024 * 1024;
export const CONNTRACK_ARGS = ['-E', '-o', 'timestamp,extended,id', '-e', 'NEW,UPDATE,DESTROY', '-b', String(NETLINK_BUFFER)];

export interface ConntrackSourceOptions {
  /** command prefix, e.g. ['ip', 'netns', 'exec', 'x'] (tests) */
  exec?: string[];
}


export class ConntrackSource implements Source {
  readonly name = 'conntrack';
  private child: ChildProcess | null = null;
  private exited: Promise<void> | null = null;
  private stopping = false;
  private ctx: RecordContext | null = null;
  private st = { events: 0, dropped: 0, enobufs: 0 };

  constructor(readonly opts: RecordOptions, private readonly o: ConntrackSourceOptions = {}) {}

  private cmd(argv: string[]): [string, string[]] {
    const full = [...(this.o.exec ?? netnsExec(this.opts.netns)), ...argv];
    return [full[0]!, full.slice(1)];
  }

  async preflight(): Promise<Preflight> {
    const pf = await this.preflightHere();
    return { ...pf, detail: `${pf.detail}${netnsNote(this.opts.netns)}` };
  }

  private async preflightHere(): Promise<Preflight> {
    const [c, a] = this.cmd(['conntrack', '--version']);
    const v = spawnSync(c, a, { encoding: 'utf8', timeout: 5000 });
    if (v.error || v.status !== 0) {
      return { ok: false, clock: 'receipt', detail: `conntrack not found or not runnable (${v.error?.message ?? (v.stderr || '').trim()})` };
    }
    const version = `${v.stdout}${v.stderr}`.trim().split('\n')[0] ?? 'conntrack';
    const [c2, a2] = this.cmd(['conntrack', '-C']);
    const count = spawnSync(c2, a2, { encoding: 'utf8', timeout: 5000 });
    if (count.error || count.status !== 0) {
      return {
        ok: false, clock: 'receipt', versions: { conntrack: version },
        detail: `conntrack -C failed: ${(count.stderr || count.error?.message || '').trim().split('\n')[0]} (root and nf_conntrack needed)`,
      };
    }
    return {
      ok: true, clock: 'receipt', versions: { conntrack: version },
      detail: `conntrack -E NEW/UPDATE/DESTROY, stamped by conntrack on netlink receipt (µs); ${count.stdout.trim()} entries tracked at start`,
    };
  }

  async start(sink: Sink, ctx: RecordContext): Promise<void> {
    this.ctx = ctx;
    const [c, a] = this.cmd(['conntrack', ...CONNTRACK_ARGS]);
    const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const p = parseConntrackLine(line, nowNs());
      if (p.t === 'row') { this.st.events++; sink.conntrack(p.row); } else if (p.t === 'malformed') {
        this.st.dropped++;
        sink.dropped('conntrack', 1);
      }
    });
    const errRl = createInterface({ input: child.stderr! });
    errRl.on('line', (line) => {
      if (/ENOBUFS|losing events/i.test(line)) {
        // the kernel dropped events we will never see; their number is unknown: count one per warning
        this.st.enobufs++;
        this.st.dropped++;
        sink.dropped('conntrack', 1);
        if (this.st.enobufs === 1) ctx.log(`conntrack: ${line.trim()}`);
      } else if (/^conntrack v|^NOTICE:/.test(line)) {
        // summary at exit, buffer size notice
      } else if (line.trim()) {
        ctx.log(`conntrack: ${line.trim()}`);
      }
    });
    child.once('error', (e) => ctx.log(`conntrack: ${e.message}`));
    child.once('close', (code, sig) => {
      if (!this.stopping) ctx.sourceFailed?.('conntrack', `conntrack -E ended early (${sig ?? `exit ${code}`}) at ${new Date().toISOString()}`);
    });
    // resolve once conntrack has subscribed (it prints the buffer notice right after), or soon anyway
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 300);
      child.stderr!.once('data', () => { clearTimeout(t); resolve(); });
      child.once('close', () => { clearTimeout(t); resolve(); });
    });
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) { await this.exited; return; }
    // SIGINT: conntrack flushes stdout, prints its summary and exits
    child.kill('SIGINT');
    const t = setTimeout(() => child.kill('SIGKILL'), 2000);
    await this.exited;
    clearTimeout(t);
  }

  stats(): SourceStats {
    return { events: this.st.events, dropped: this.st.dropped, extra: this.st.enobufs ? `${this.st.enobufs} ENOBUFS` : undefined };
  }
}

export function create(opts: RecordOptions, o: ConntrackSourceOptions = {}): Source {
  return new ConntrackSource(opts, o);
}

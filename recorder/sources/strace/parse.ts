/**
 * Pure parser of `strace -f -ttt -q -y` output (one line at a time, stateful across lines for
 * <unfinished ...>/<... resumed> pairs and for which socket inodes are listeners). Lines in, events out.
 * Timestamps: strace -ttt prints realtime seconds.microseconds taken in the tracer.
 */
import { signo } from '../../../schemas/signals.js';
import { ev, type RtEvent } from '../../../schemas/events.js';

export interface KnownListener { pid: number; fd: number; addr: string; port: number; inode: number }

export interface StraceParserOptions {
  /** thread id -> thread group id (process id); default identity */
  tgidOf?: (tid: number) => number;
  /** listeners open before attach, from /proc (inode -> owner) */
  listeners?: KnownListener[];
  /** signals not worth an event (runtime noise) */
  ignoreSignals?: string[];
  source?: 'strace' | `import:${string}`;
}

export { signo } from '../../../schemas/signals.js';

const LINE_RE = /^(?:\[pid\s+)?(\d+)\]?\s+(\d+)\.(\d+)\s+(.*)$/;
const SOCK_FD_RE = /^(-?\d+)(?:<socket:\[(\d+)\]>|<[A-Z0-9]+:\[(\d+)\]>)?/;

/** strace -ttt "sec.usec" -> epoch ns without float loss in the fraction. */
export function straceTs(sec: string, frac: string): number {
  return Number(sec) * 1e9 + Number(frac.padEnd(9, '0').slice(0, 9));
}

/** Parse a sockaddr as printed by strace: {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("1.2.3.4")} or AF_INET6. */
export function parseSockaddr(s: string): { addr: string; port: number } | null {
  const port = /sin6?_port=htons\((\d+)\)/.exec(s);
  if (!port) return null;
  const a4 = /sin_addr=inet_addr\("([^"]+)"\)/.exec(s);
  const a6 = /inet_pton\(AF_INET6,\s*"([^"]+)"/.exec(s);
  const addr = a4?.[1] ?? a6?.[1];
  return addr === undefined ? null : { addr, port: Number(port[1]) };
}

interface Listener { pid: number; fd: number; addr: string; port: number; open: boolean }

export class StraceParser {
  lines = 0;
  malformed = 0;
  /** lines understood but not turned into events */
  ignored = 0;
  private pending = new Map<number, { ts: number; text: string }>();
  private bound = new Map<number, { addr: string; port: number }>();
  private listeners = new Map<number, Listener>();
  private exitCode = new Map<number, number>();
  private tgidOf: (tid: number) => number;
  private ignoreSignals: Set<string>;
  private source: 'strace' | `import:${string}`;

  constructor(opts: StraceParserOptions = {}) {
    this.tgidOf = opts.tgidOf ?? ((t) => t);
    this.ignoreSignals = new Set(opts.ignoreSignals ?? ['SIGURG', 'SIGCHLD', 'SIGWINCH']);
    this.source = opts.source ?? 'strace';
    for (const l of opts.listeners ?? []) this.addListener(l);
  }

  addListener(l: KnownListener): void {
    this.listeners.set(l.inode, { pid: l.pid, fd: l.fd, addr: l.addr, port: l.port, open: true });
  }

  /** Listeners still open (inode -> owner). */
  openListeners(): Array<KnownListener> {
    return [...this.listeners].filter(([, l]) => l.open).map(([inode, l]) => ({ inode, pid: l.pid, fd: l.fd, addr: l.addr, port: l.port }));
  }

  line(raw: string): RtEvent[] {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) return [];
    this.lines++;
    const m = LINE_RE.exec(line);
    if (!m) { this.malformed++; return []; }
    const tid = Number(m[1]);
    let ts = straceTs(m[2]!, m[3]!);
    let body = m[4]!;
    if (body.startsWith('--- ')) return this.signal(tid, ts, body);
    if (body.startsWith('+++ ')) return this.exit(tid, ts, body);
    const resumed = /^<\.\.\. (\w+) resumed>(.*)$/.exec(body);
    if (resumed) {
      const p = this.pending.get(tid);
      if (!p) { this.malformed++; return []; }
      this.pending.delete(tid);
      body = p.text + resumed[2]!;
      ts = p.ts;
      // the syscall happened when it was entered; the result is known now
    } else if (/ <unfinished \.\.\.>\)?$/.test(body)) {
      this.pending.set(tid, { ts, text: body.replace(/ <unfinished \.\.\.>\)?$/, '') });
      return [];
    }
    if (/^\w+\(/.test(body) === false) {
      if (/^(\+\+\+|---|strace: |<\.\.\.)/.test(body)) { this.ignored++; return []; }
      this.malformed++;
      return [];
    }
    return this.syscall(tid, ts, body);
  }

  private signal(tid: number, ts: number, body: string): RtEvent[] {
    const m = /^--- (SIG\w+) \{(.*)\} ---$/.exec(body) ?? /^--- (SIG\w+) (.*) ---$/.exec(body);
    if (!m) { if (/^--- (stopped|SIG)/.test(body)) { this.ignored++; return []; } this.malformed++; return []; }
    const name = m[1]!;
    if (this.ignoreSignals.has(name)) { this.ignored++; return []; }
    const pid = this.tgidOf(tid);
    const sender = /si_pid=(\d+)/.exec(m[2]!);
    return [ev('signal', ts, this.source, `pid:${pid}`, {
      pid, tid, signo: signo(name), signame: name, phase: 'delivered', ...(sender ? { sender_pid: Number(sender[1]) } : {}),
    })];
  }

  private exit(tid: number, ts: number, body: string): RtEvent[] {
    const ex = /^\+\+\+ exited with (\d+) \+\+\+$/.exec(body);
    const killed = /^\+\+\+ killed by (SIG\w+)(?: \(core dumped\))? \+\+\+$/.exec(body);
    if (!ex && !killed) { this.malformed++; return []; }
    this.pending.delete(tid);
    const pid = this.tgidOf(tid);
    if (pid !== tid) { this.ignored++; return []; } // a thread, not the process
    const out: RtEvent[] = [];
    for (const [inode, l] of this.listeners) {
      if (l.pid !== pid || !l.open) continue;
      l.open = false;
      this.listeners.delete(inode);
      out.push(ev('listener-closed', ts, this.source, `pid:${pid}`, { pid, fd: l.fd, addr: l.addr, port: l.port, how: 'exit' }));
    }
    out.push(ev('process-exit', ts, this.source, `pid:${pid}`, {
      pid, code: ex ? Number(ex[1]) : null, signal: killed ? killed[1]! : null,
    }));
    return out;
  }

  private syscall(tid: number, ts: number, body: string): RtEvent[] {
    const m = /^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(.*)$/.exec(body);
    if (!m) {
      // a syscall interrupted by the process's death: "exit_group(0) = ?" handled above; anything else is noise
      if (/^\w+\(.*\)\s*=\s*\?/.test(body) || /^\w+\(.*<detached \.\.\.>/.test(body)) { this.ignored++; return []; }
      this.malformed++;
      return [];
    }
    const [, name, args, retS, rest] = m;
    const ret = retS === '?' ? null : Number(retS);
    const pid = this.tgidOf(tid);
    const fdm = SOCK_FD_RE.exec(args!);
    const fd = fdm ? Number(fdm[1]) : NaN;
    const inode = fdm && (fdm[2] ?? fdm[3]) ? Number(fdm[2] ?? fdm[3]) : null;
    switch (name) {
      case 'bind': {
        const sa = parseSockaddr(args!);
        if (ret === 0 && inode !== null && sa) this.bound.set(inode, sa);
        this.ignored++;
        return [];
      }
      case 'listen': {
        if (ret !== 0 || inode === null) { this.ignored++; return []; }
        const b = this.bound.get(inode) ?? { addr: '?', port: 0 };
        const already = this.listeners.get(inode);
        this.listeners.set(inode, { pid, fd, addr: b.addr, port: b.port, open: true });
        if (already?.open) { this.ignored++; return []; }
        return [ev('listen', ts, this.source, `pid:${pid}`, { pid, fd, addr: b.addr, port: b.port, how: 'syscall' })];
      }
      case 'accept': case 'accept4': {
        if (ret === null || ret < 0 || inode === null || !this.listeners.has(inode)) { this.ignored++; return []; }
        const peer = parseSockaddr(args!);
        return [ev('accept', ts, this.source, `pid:${pid}`, {
          pid, fd: ret, listen_fd: fd, ...(peer ? { peer: peer.addr, peer_port: peer.port } : {}),
        })];
      }
      case 'close': case 'shutdown': {
        const l = inode !== null ? this.listeners.get(inode) : undefined;
        if (!l || !l.open || ret !== 0) { this.ignored++; return []; }
        l.open = false;
        if (name === 'close') this.listeners.delete(inode!);
        return [ev('listener-closed', ts, this.source, `pid:${pid}`, { pid, fd, addr: l.addr, port: l.port, how: name })];
      }
      case 'exit_group': {
        this.exitCode.set(pid, Number(args));
        this.ignored++;
        void rest;
        return [];
      }
      default:
        this.ignored++;
        return [];
    }
  }
}

/** Parse a whole strace log (for `rolltrace import --strace` and tests). */
export function parseStraceText(text: string, opts: StraceParserOptions = {}): { events: RtEvent[]; lines: number; malformed: number } {
  const p = new StraceParser(opts);
  const events: RtEvent[] = [];
  for (const l of text.split('\n')) events.push(...p.line(l));
  return { events, lines: p.lines, malformed: p.malformed };
}

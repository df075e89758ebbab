/**
 * Pure parser of the lines printed by the generated bpftrace program. Every timestamp is bpftrace's
 * `nsecs` (CLOCK_MONOTONIC) plus the realtime-monotonic offset measured at start.
 */
import { ev, type RtEvent } from '../../../schemas/events.js';
import { signame } from '../../../schemas/signals.js';
import { ip6FromBytes } from '../../procfs/parse.js';
import { TCP_STATES } from './format.js';

export interface EbpfParserOptions {
  /** realtime_ns - monotonic_ns */
  offsetNs: number;
  /** sk_rst_reason names from the tracepoint's print fmt */
  resetReasons?: Map<number, string>;
  /** cgroup id -> pod uid */
  podOfCgroup?: (id: number) => string | null;
  /**
   * pid -> pod uid of a signal's target, looked up when the line is read (signal_generate carries no
   * cgroup of the target; the target is alive then: it has just been sent SIGTERM)
   */
  podOfPid?: (pid: number) => string | null;
}


/** "\x02\x00\x00\x09..." (bpftrace %rx) -> bytes */
export function unescapeHex(s: string): number[] | null {
  if (!/^(\\x[0-9a-fA-F]{2})*$/.test(s)) return null;
  const out: number[] = [];
  for (let i = 0; i < s.length; i += 4) out.push(parseInt(s.slice(i + 2, i + 4), 16));
  return out;
}

/** A struct sockaddr_in / sockaddr_in6 as raw bytes (x86: family in host order). */
export function decodeSockaddr(b: number[]): { addr: string; port: number } | null {
  if (b.length < 8) return null;
  const family = b[0]! | (b[1]! << 8);
  const port = (b[2]! << 8) | b[3]!;
  if (family === 2) return { addr: `${b[4]}.${b[5]}.${b[6]}.${b[7]}`, port };
  if (family === 10 && b.length >= 24) return { addr: ip6FromBytes(b.slice(8, 24)), port };
  return null;
}

export class EbpfParser {
  lines = 0;
  malformed = 0;
  /** nsecs printed by the BEGIN probe (null until seen) */
  beginNs: number | null = null;
  private o: EbpfParserOptions;

  constructor(o: EbpfParserOptions) { this.o = o; }
  /** the monotonic -> realtime offset for the lines from now on (the realtime clock stepped) */
  setOffset(ns: number): void { this.o = { ...this.o, offsetNs: ns }; }

  private ts(nsecs: string): number { return Number(nsecs) + this.o.offsetNs; }
  /**
   * The pod of a cgroup id, from the recorder's scan of kubepods directories. A container started after the
   * last scan (the scan follows the API's pod changes, the cgroup comes later) misses it: listen and close
   * run in the process's own context, so the caller falls back to the process's /proc cgroup.
   */
  private pod(cg: number): string | null { return this.o.podOfCgroup?.(cg) ?? null; }

  line(raw: string): RtEvent[] {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) return [];
    if (!line.startsWith('RT\t')) {
      // bpftrace's own chatter ("Attaching 5 probes...", warnings) is not data
      if (/^(Attaching \d+ probes|WARNING|ERROR|Lost \d+ events)/.test(line)) {
        const lost = /^Lost (\d+) events/.exec(line);
        if (lost) this.malformed += Number(lost[1]);
        return [];
      }
      this.lines++; this.malformed++; return [];
    }
    this.lines++;
    const f = line.split('\t');
    const num = (i: number) => { const v = Number(f[i]); return Number.isFinite(v) && f[i] !== '' ? v : NaN; };
    const bad = (): RtEvent[] => { this.malformed++; return []; };
    switch (f[1]) {
      case 'BEGIN': {
        if (f.length !== 3 || Number.isNaN(num(2))) return bad();
        this.beginNs = num(2);
        return [];
      }
      case 'SK': {
        // RT SK nsecs old new sport family saddr saddr6 pid cgroup netns comm
        if (f.length < 13) return bad();
        const [old, nw, sport, fam, pid, cg, netns] = [num(3), num(4), num(5), num(6), num(9), num(10), num(11)];
        if ([old, nw, sport, pid, cg].some(Number.isNaN) || Number.isNaN(num(2))) return bad();
        const addr = fam === 10 ? f[8]! : f[7]!;
        const comm = f.slice(12).join('\t');
        const common = { pid, comm, addr, port: sport, how: 'tcp-state' as const, ...(netns ? { netns } : {}), cgroup_id: cg, pod_uid: this.pod(cg) ?? (pid > 0 ? this.o.podOfPid?.(pid) ?? null : null) };
        if (old === 10 && nw === 7) return [ev('listener-closed', this.ts(f[2]!), 'ebpf', `pid:${pid}`, common)];
        if (old === 7 && nw === 10) return [ev('listen', this.ts(f[2]!), 'ebpf', `pid:${pid}`, common)];
        return bad();
      }
      case 'RST': {
        // RT RST nsecs state reason saddr(hex) daddr(hex) pid netns comm
        if (f.length < 10) return bad();
        const sb = unescapeHex(f[5]!), db = unescapeHex(f[6]!);
        const s = sb && decodeSockaddr(sb), d = db && decodeSockaddr(db);
        if (!s || !d || Number.isNaN(num(2))) return bad();
        const state = num(3), reason = num(4), pid = num(7), netns = num(8);
        return [ev('tcp-reset-sent', this.ts(f[2]!), 'ebpf', d.addr.includes(':') ? `[${d.addr}]:${d.port}` : `${d.addr}:${d.port}`, {
          saddr: s.addr, sport: s.port, daddr: d.addr, dport: d.port,
          ...(reason >= 0 ? { reason: this.o.resetReasons?.get(reason) ?? String(reason) } : {}),
          ...(state ? { state: TCP_STATES[state] ?? String(state) } : {}),
          pid, comm: f.slice(9).join('\t'), ...(netns ? { netns } : {}),
        })];
      }
      case 'RSTP': {
        // RT RSTP nsecs state family sport dport saddr daddr saddr6 daddr6 pid comm
        if (f.length < 13) return bad();
        const [state, fam, sport, dport, pid] = [num(3), num(4), num(5), num(6), num(11)];
        if ([sport, dport, pid].some(Number.isNaN) || Number.isNaN(num(2))) return bad();
        const v6 = fam === 10 || (fam === 0 && f[7] === '0.0.0.0');
        return [ev('tcp-reset-sent', this.ts(f[2]!), 'ebpf', null, {
          saddr: v6 ? f[9]! : f[7]!, sport, daddr: v6 ? f[10]! : f[8]!, dport,
          ...(state ? { state: TCP_STATES[state] ?? String(state) } : {}), pid, comm: f.slice(12).join('\t'),
        })];
      }
      case 'SIG': {
        // RT SIG nsecs sig target result senderpid targetcomm sendercomm
        if (f.length < 9) return bad();
        const [sig, target, result, sender] = [num(3), num(4), num(5), num(6)];
        if ([sig, target, result, sender].some(Number.isNaN) || Number.isNaN(num(2))) return bad();
        const name = signame(sig);
        return [ev('signal', this.ts(f[2]!), 'ebpf', `pid:${target}`, {
          pid: target, comm: f[7]!, signo: sig, signame: name, phase: 'generated',
          sender_pid: sender, sender_comm: f.slice(8).join('\t'), ...(result >= 0 ? { result } : {}),
          ...(this.o.podOfPid ? { pod_uid: this.o.podOfPid(target) } : {}),
        })];
      }
      case 'EXIT': {
        // RT EXIT nsecs pid exit_code comm
        if (f.length < 6) return bad();
        const [pid, code] = [num(3), num(4)];
        if ([pid, code].some(Number.isNaN) || Number.isNaN(num(2))) return bad();
        const sig = code >= 0 ? code & 0x7f : -1;
        return [ev('process-exit', this.ts(f[2]!), 'ebpf', `pid:${pid}`, {
          pid, comm: f.slice(5).join('\t'),
          code: code < 0 ? null : sig === 0 ? (code >> 8) & 0xff : null,
          signal: code < 0 || sig === 0 ? null : signame(sig),
        })];
      }
      default:
        return bad();
    }
  }
}

/**
 * nftables source: this node's kube-proxy rules, in both kube-proxy modes.
 *
 * - `nft -j monitor` (flushes per line on a pipe: verified on nftables 1.0.6) is read line by line and
 *   each line stamped on receipt. Lines close into a burst after QUIET_MS without a new line (or
 *   MAX_BURST_MS after its first line). Each burst gives one `rules-changed` event (ops counts, tables).
 * - After each burst, and at start and stop, a full `nft -j list ruleset` snapshot is stored
 *   (nft_snapshots, format nft-json) and, when the ruleset holds iptables-nft KUBE-* chains, also
 *   `iptables-save -t nat` + `-t filter` (format iptables-save): iptables-nft rules show in nft's JSON
 *   only as opaque xt statements.
 * - Each snapshot is reduced to the DNAT targets reachable per service (reduce.ts); only a change of
 *   that set gives endpoint-rule-added/removed (and no-endpoint-rule-added/removed) events, stamped with
 *   the receipt time of the burst's FIRST monitor line.
 * - Nodes with legacy iptables (no nft KUBE rules, `iptables-legacy-save` has KUBE- chains): poll
 *   `iptables-legacy-save` every POLL_MS; events carry clock `polled`.
 *
 * Runs in the recorder's network namespace (nft sees that netns's rules), or with `record --netns` in
 * that one: every command is prefixed with `nsenter --net=PATH` (nsenter execs nft, so the monitor's
 * stdout is still nft's own pipe). `exec` (tests) overrides the prefix, e.g. ['ip', 'netns', 'exec', 'NAME'].
 */
import { nowNs } from '../../clock.js';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import type { Sink } from '../../bundle-writer.js';
import type { Preflight, RecordContext, RecordOptions, Source, SourceStats } from '../../source.js';
import { netnsExec, netnsNote } from '../../netns.js';
import { ev, type Clock } from '../../../schemas/events.js';
import type { NftSnapshotRow } from '../../../schemas/rows.js';
import { hasIptablesKubeChains, parseNftRuleset, reduceNftRuleset, type NftModel } from './nft-json.js';
import { hasKubeChains, parseIptablesSave, reduceIptablesSave } from './iptables.js';
import { changeStamp, isKubeRelevantTable, noEndpointStamp, parseMonitorLine, ruleFacts, summarizeBurst, type StampedRecord } from './monitor.js';
import { diffPaths, diffReductions, emptyReduction, mergeReductions, type Reduction } from './reduce.js';

export const QUIET_MS = 30;
export const MAX_BURST_MS = 1000;
export const POLL_MS = 100;

export interface NftSourceOptions {
  /** command prefix, e.g. ['ip', 'netns', 'exec', 'x'] (tests) */
  exec?: string[];
  quietMs?: number;
  pollMs?: number;
}


interface Burst { firstTs: number; records: StampedRecord[]; timer: NodeJS.Timeout | null }

type Mode = 'monitor' | 'legacy-poll' | 'nft-poll';

export class NftablesSource implements Source {
  readonly name = 'nftables';
  private sink: Sink | null = null;
  private ctx: RecordContext | null = null;
  private mon: Worker | null = null;
  private monExit: Promise<void> | null = null;
  private burst: Burst | null = null;
  /** monitor records of the bursts whose diff is not applied yet (a deferred snapshot keeps them) */
  private pending: StampedRecord[] = [];
  /** receipt time of the latest kube-relevant monitor line */
  private lastLineTs = 0;
  /** kube-relevant monitor lines processed so far (stamps come from the worker, processing may lag them) */
  private linesSeen = 0;
  private work: Promise<void> = Promise.resolve();
  private prev: Reduction = emptyReduction();
  private stopping = false;
  private pollTimer: NodeJS.Timeout | null = null;
  private lastPollText = '';
  private mode: Mode = 'monitor';
  private iptSave = 'iptables-save';
  private ip6tSave = 'ip6tables-save';
  private legacySave = 'iptables-legacy-save';
  private lastSnapshotText = new Map<string, string>();
  private st = { events: 0, dropped: 0, bursts: 0, snapshots: 0 };
  private readonly quietMs: number;
  private readonly pollMs: number;

  constructor(readonly opts: RecordOptions, private readonly o: NftSourceOptions = {}) {
    this.quietMs = o.quietMs ?? QUIET_MS;
    this.pollMs = o.pollMs ?? POLL_MS;
  }

  private cmd(argv: string[]): [string, string[]] {
    const full = [...(this.o.exec ?? netnsExec(this.opts.netns)), ...argv];
    return [full[0]!, full.slice(1)];
  }

  private runSync(argv: string[]): { ok: boolean; out: string; err: string } {
    const [c, a] = this.cmd(argv);
    const r = spawnSync(c, a, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 10_000 });
    return { ok: r.status === 0 && !r.error, out: r.stdout ?? '', err: (r.stderr ?? '') + (r.error ? String(r.error.message) : '') };
  }

  private run(argv: string[]): Promise<string> {
    const [c, a] = this.cmd(argv);
    return new Promise((resolve, reject) => {
      execFile(c, a, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${argv.join(' ')}: ${(stderr || err.message).trim().split('\n')[0]}`));
        else resolve(stdout);
      });
    });
  }

  async preflight(): Promise<Preflight> {
    const pf = await this.preflightHere();
    return { ...pf, detail: `${pf.detail}${netnsNote(this.opts.netns)}` };
  }

  private async preflightHere(): Promise<Preflight> {
    const versions: Record<string, string> = {};
    const v = this.runSync(['nft', '--version']);
    const nftOk = v.ok;
    if (nftOk) versions.nft = v.out.trim();
    let nftList = nftOk ? this.runSync(['nft', '-j', 'list', 'ruleset']) : null;
    if (nftList && !nftList.ok) nftList = null;
    const ipt = this.runSync(['iptables-nft-save', '--version']);
    if (this.runSync(['ip6tables-nft-save', '--version']).ok) this.ip6tSave = 'ip6tables-nft-save';
    if (ipt.ok) { this.iptSave = 'iptables-nft-save'; versions['iptables-nft-save'] = ipt.out.trim(); } else {
      const i2 = this.runSync(['iptables-save', '--version']);
      if (i2.ok && /nf_tables/.test(i2.out)) versions['iptables-save'] = i2.out.trim();
    }
    let nftHasKube = false;
    let nftMode = 'not seen yet';
    if (nftList) {
      try {
        const m = parseNftRuleset(nftList.out);
        const kp = m.tables.some((t) => t.name === 'kube-proxy');
        const ik = hasIptablesKubeChains(m);
        nftHasKube = kp || ik;
        nftMode = kp && ik ? 'nftables + iptables' : kp ? 'nftables' : ik ? 'iptables (iptables-nft)' : 'not seen yet';
      } catch { /* reported below as unreadable */ }
    }
    // legacy iptables: no KUBE rules in nft, but iptables-legacy-save has them
    if (!nftHasKube) {
      const lv = this.runSync(['iptables-legacy-save', '--version']);
      if (lv.ok) {
        const lt = this.runSync(['iptables-legacy-save', '-t', 'nat']);
        if (lt.ok && hasKubeChains(parseIptablesSave(lt.out))) {
          versions['iptables-legacy-save'] = lv.out.trim();
          this.mode = 'legacy-poll';
          return {
            ok: true, clock: 'polled', versions,
            detail: `kube-proxy iptables mode on legacy iptables: polling iptables-legacy-save -t nat/filter every ${this.pollMs} ms (clock polled: up to ${this.pollMs} ms late)`,
          };
        }
      }
    }
    if (!nftOk) return { ok: false, clock: 'receipt', versions, detail: `nft not found or not runnable: ${v.err.trim().split('\n')[0] || 'unknown error'}` };
    if (!nftList) return { ok: false, clock: 'receipt', versions, detail: 'nft -j list ruleset failed (root / CAP_NET_ADMIN needed)' };
    this.mode = 'monitor';
    return {
      ok: true, clock: 'receipt', versions,
      detail: `nft -j monitor stamped on receipt, ruleset snapshots after each burst (${this.quietMs} ms quiet gap); kube-proxy rules: ${nftMode}`,
    };
  }

  async start(sink: Sink, ctx: RecordContext): Promise<void> {
    this.sink = sink;
    this.ctx = ctx;
    const t0 = nowNs();
    if (this.mode === 'legacy-poll') {
      await this.pollLegacy('start');
      this.schedulePoll();
      return;
    }
    this.startMonitor();
    // the start snapshot is taken after the monitor runs, so no change can fall between the two
    await this.enqueue(() => this.snapshot('start', t0, false));
  }

  private startMonitor(): void {
    // nft runs under a worker thread that stamps each line on receipt (see monitor-worker.mjs)
    const [c, a] = this.cmd(['nft', '-j', 'monitor']);
    const worker = new Worker(new URL('./monitor-worker.mjs', import.meta.url), { workerData: { argv: [c, ...a] } });
    this.mon = worker;
    let closed = false;
    this.monExit = new Promise((resolve) => worker.once('exit', () => resolve()));
    const ended = (why: string) => {
      if (closed) return;
      closed = true;
      if (this.stopping) return;
      this.ctx?.log(`nftables: nft monitor ended (${why}); polling nft -j list ruleset every ${this.pollMs} ms instead`);
      this.mode = 'nft-poll';
      this.schedulePoll();
    };
    worker.on('message', (m: { t: 'lines'; lines: Array<[number, string]> } | { t: 'error'; message: string } | { t: 'close'; code: number | null; errTail: string }) => {
      if (m.t === 'lines') for (const [ts, line] of m.lines) this.onLine(line, ts);
      else if (m.t === 'error') this.ctx?.log(`nftables: nft monitor: ${m.message}`);
      else ended(m.errTail.split('\n').filter((l) => l && !/rule without statements/.test(l)).pop() ?? `exit ${m.code}`);
    });
    worker.once('error', (e) => ended(`monitor thread: ${e.message}`));
    worker.once('exit', () => ended('monitor thread exited'));
  }

  /** One monitor line, stamped `ts` on receipt. */
  onLine(line: string, ts: number): void {
    const p = parseMonitorLine(line);
    if (p.t === 'noise') return;
    if (p.t === 'malformed') { this.st.dropped++; this.sink?.dropped('nftables', 1); return; }
    if (!isKubeRelevantTable(p.r.table)) return;
    this.lastLineTs = ts;
    this.linesSeen++;
    if (!this.burst) this.burst = { firstTs: ts, records: [], timer: null };
    const b = this.burst;
    const rule = p.r.object === 'rule' ? ruleFacts(p.doc) : undefined;
    b.records.push(rule ? { ...p.r, ts, rule } : { ...p.r, ts });
    if (b.timer) clearTimeout(b.timer);
    if ((ts - b.firstTs) / 1e6 >= MAX_BURST_MS) { this.closeBurst(); return; }
    b.timer = setTimeout(() => this.closeBurst(), this.quietMs);
  }

  private closeBurst(): void {
    const b = this.burst;
    if (!b) return;
    this.burst = null;
    if (b.timer) clearTimeout(b.timer);
    this.st.bursts++;
    const attrs = summarizeBurst(b.records);
    this.emit(ev('rules-changed', b.firstTs, 'nftables', attrs.tables.join(',') || null, attrs));
    const closedAt = nowNs();
    const seenAtClose = this.linesSeen;
    void this.enqueue(() => { this.pending.push(...b.records); return this.snapshot('burst', b.firstTs, true, 'receipt', undefined, closedAt, seenAtClose); });
  }

  private enqueue(f: () => Promise<void>): Promise<void> {
    this.work = this.work.then(f).catch((e: unknown) => {
      this.st.dropped++;
      this.sink?.dropped('nftables', 1);
      this.ctx?.log(`nftables: ${(e as Error).message}`);
    });
    return this.work;
  }

  private emit(e: Parameters<Sink['event']>[0]): void {
    this.st.events++;
    this.sink?.event(e);
  }

  private storeSnapshot(format: NftSnapshotRow['format'], reason: string, ts: number, text: string, family = ''): void {
    // identical consecutive snapshots (same handles: nothing was rewritten) are stored once; iptables-save
    // text is compared without its date comments and counters, which differ on every call
    const k = `${format} ${family}`;
    const cmp = format === 'nft-json' ? text : normalizeSave(text);
    if (reason === 'burst' && this.lastSnapshotText.get(k) === cmp) return;
    this.lastSnapshotText.set(k, cmp);
    this.st.snapshots++;
    this.sink?.nftSnapshot({ ts_ns: ts, format, reason, ruleset: text });
  }

  /**
   * Take a snapshot now; diff its reduction against the previous one; stamp changes `eventTs`.
   * `burstClosedAt`: when a burst's snapshot may already hold a LATER transaction (a monitor line came
   * after that burst closed: the snapshot ran while the next sync committed, as on a loaded real node where
   * iptables-restore commits the filter and nat tables ~100 ms apart), its diff is not stamped with this
   * burst's time: the next burst's snapshot takes the diff, stamped with that burst's first line. A change
   * is then stamped at the latest at the transaction that made it, never before.
   */
  private async snapshot(reason: string, eventTs: number, diff: boolean, clock: Clock = 'receipt', fetched?: string, burstClosedAt?: number, seenAtClose?: number): Promise<void> {
    const takenAt = nowNs();
    const nftText = fetched ?? await this.run(['nft', '-j', 'list', 'ruleset']);
    const model = parseNftRuleset(nftText);
    this.storeSnapshot('nft-json', reason, takenAt, nftText);
    const reds: Reduction[] = [reduceNftRuleset(model)];
    for (const fam of iptablesFamilies(model)) {
      const save = fam === 'ip' ? this.iptSave : this.ip6tSave;
      const nat = await this.run([save, '-t', 'nat']);
      const filter = await this.run([save, '-t', 'filter']);
      const text = nat + filter;
      this.storeSnapshot('iptables-save', reason, takenAt, text, fam);
      const parsed = parseIptablesSave(text);
      if (parsed.malformed) { this.st.dropped += parsed.malformed; this.sink?.dropped('nftables', parsed.malformed); }
      reds.push(reduceIptablesSave(parsed, 'iptables'));
    }
    // a line stamped after the burst closed, or processed after it (its worker stamp can precede the close
    // when the main thread lags): the snapshot may hold that later transaction; the next burst takes the diff
    if (burstClosedAt !== undefined && (this.lastLineTs > burstClosedAt || (seenAtClose !== undefined && this.linesSeen > seenAtClose))) return;
    this.applyReduction(mergeReductions(...reds), diff, eventTs, clock);
  }

  private applyReduction(next: Reduction, diff: boolean, ts: number, clock: Clock): void {
    const recs = this.pending;
    this.pending = [];
    if (diff) {
      // several syncs in one burst: stamp each endpoint removal (any path, and per path) with the line that made it
      for (const e of [...diffReductions(this.prev, next, { ts_ns: ts, clock }), ...diffPaths(this.prev, next, { ts_ns: ts, clock })]) {
        const chain = (e.attrs as { chain?: string | null }).chain;
        if (chain && recs.length && (e.kind === 'endpoint-rule-removed' || e.kind === 'path-rule-removed')) {
          const t = changeStamp(recs, chain);
          if (t !== null) e.ts_ns = t;
        }
        // a no-endpoint rule added in an earlier burst whose diff waited for this one: the line that added it
        if (e.kind === 'no-endpoint-rule-added' && recs.length) {
          const t = noEndpointStamp(recs, e.attrs as { vip: string | null; node_port: number | null; action: 'reject' | 'drop' });
          if (t !== null && t < e.ts_ns) e.ts_ns = t;
        }
        this.emit(e);
      }
    }
    this.prev = next;
  }

  private schedulePoll(): void {
    if (this.stopping) return;
    this.pollTimer = setTimeout(() => {
      void this.enqueue(() => (this.mode === 'legacy-poll' ? this.pollLegacy('poll') : this.pollNft())).then(() => this.schedulePoll());
    }, this.pollMs);
  }

  private async pollNft(): Promise<void> {
    const ts = nowNs();
    const text = await this.run(['nft', '-j', 'list', 'ruleset']);
    const norm = text.replace(/"handle":\s*\d+,?/g, '');
    if (norm === this.lastPollText) return;
    this.lastPollText = norm;
    await this.snapshot('poll', ts, true, 'polled', text);
  }

  private async pollLegacy(reason: 'start' | 'poll' | 'stop'): Promise<void> {
    const first = reason === 'start';
    const ts = nowNs();
    const nat = await this.run([this.legacySave, '-t', 'nat']);
    const filter = await this.run([this.legacySave, '-t', 'filter']);
    const text = nat + filter;
    const norm = normalizeSave(text);
    const changed = first || norm !== this.lastPollText;
    if (!changed && reason === 'poll') return;
    this.lastPollText = norm;
    this.st.snapshots++;
    this.sink?.nftSnapshot({ ts_ns: ts, format: 'iptables-legacy-save', reason, ruleset: text });
    if (!changed) return;
    const parsed = parseIptablesSave(text);
    if (parsed.malformed) { this.st.dropped += parsed.malformed; this.sink?.dropped('nftables', parsed.malformed); }
    if (!first) this.emit(ev('rules-changed', ts, 'nftables', 'iptables-legacy', { lines: 0, ops: { poll: 1 }, tables: ['nat', 'filter'] }));
    this.applyReduction(reduceIptablesSave(parsed, 'iptables-legacy'), !first, ts, 'polled');
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.pollTimer) clearTimeout(this.pollTimer);
    if (this.mon) {
      // give lines already written a moment to arrive, then end the monitor
      await new Promise((r) => setTimeout(r, Math.min(this.quietMs, 50)));
      const mon = this.mon;
      mon.postMessage('stop');
      const killTimer = setTimeout(() => { void mon.terminate(); }, 4000);
      await this.monExit;
      clearTimeout(killTimer);
    }
    this.closeBurst();
    const ts = nowNs();
    if (this.mode === 'legacy-poll') await this.enqueue(() => this.pollLegacy('stop'));
    else await this.enqueue(() => this.snapshot('stop', ts, true));
    await this.work;
  }

  stats(): SourceStats {
    return { events: this.st.events, dropped: this.st.dropped, extra: `${this.st.bursts} bursts, ${this.st.snapshots} snapshots` };
  }
}

/** iptables-save text without what changes on every call: the date comments and the built-in chains' counters. */
export function normalizeSave(text: string): string {
  return text.split('\n').filter((l) => !l.startsWith('#')).join('\n').replace(/\[\d+:\d+\]/g, '');
}

/** Families ('ip', 'ip6') whose iptables-nft tables hold kube-proxy KUBE-* chains. */
export function iptablesFamilies(model: NftModel): Array<'ip' | 'ip6'> {
  const out = new Set<'ip' | 'ip6'>();
  for (const t of model.tables) {
    if (t.name === 'kube-proxy' || (t.family !== 'ip' && t.family !== 'ip6')) continue;
    if ([...t.chains.keys()].some((c) => c.startsWith('KUBE-'))) out.add(t.family);
  }
  return [...out].sort();
}

export function create(opts: RecordOptions, o: NftSourceOptions = {}): Source {
  return new NftablesSource(opts, o);
}

/**
 * The lab's kube-proxy: watches Services and EndpointSlices through the API server and programs real
 * rules (nftables via `nft -f -`, or iptables-nft via `iptables-restore --noflush`) in the current or a
 * given network namespace. Sync scheduling follows min-sync-period semantics: changes are batched; a
 * sync runs syncDelayMs after the first unsynced change and never sooner than minSyncPeriodMs after
 * the previous sync started. Each sync's start/end instants and endpoint diff are reported (the truth).
 */
import { informer, type KObj, type KubeClient } from '../kube.js';
import { nowNs, run, runAsync } from '../sys.js';
import { buildServicePorts, routedEndpoints, type K8sEndpointSlice, type K8sService } from './model.js';
import { emptyNftState, nftSync, type NftSyncState } from './nft-rules.js';
import { IPTABLES_JUMPS, iptablesSync } from './iptables-rules.js';

export interface SyncRecord {
  seq: number;
  mode: 'nftables' | 'iptables';
  startNs: number;
  endNs: number;
  /** "ns/svc:port|ip:port" routed after this sync and not before */
  added: string[];
  removed: string[];
  flushedChains: string[];
  deletedChains: string[];
  error: string | null;
}


export interface KubeProxyOptions {
  client: KubeClient;
  nodeName: string;
  mode: 'nftables' | 'iptables';
  /** run the rule tools inside this netns (null: the current one) */
  netns?: string | null;
  podCIDR: string;
  serviceCIDR: string;
  nodePortIPs: string[];
  syncDelayMs?: number;
  minSyncPeriodMs?: number;
  staleDeleteMs?: number;
}

export class KubeProxy {
  readonly syncs: SyncRecord[] = [];
  private services = new Map<string, K8sService>();
  private slices = new Map<string, K8sEndpointSlice>();
  private abort = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private dirty = false;
  private lastStartMs = 0;
  private nftState: NftSyncState = emptyNftState();
  private iptChains: string[] = [];
  private routed = new Set<string>();
  private seq = 0;
  private runs: Promise<void>[] = [];

  constructor(readonly o: KubeProxyOptions) {}

  private tool(cmd: string, args: string[]): [string, string[]] {
    return this.o.netns ? ['ip', ['netns', 'exec', this.o.netns, cmd, ...args]] : [cmd, args];
  }

  async start(): Promise<void> {
    if (this.o.mode === 'iptables') {
      // the KUBE chains must exist before the jumps; then the jumps, once (kube-proxy's EnsureRule)
      const first = iptablesSync([], { podCIDR: this.o.podCIDR }, []);
      const [c, a] = this.tool('iptables-restore', ['--noflush']);
      run(c, a, { input: first.text });
      for (const j of IPTABLES_JUMPS) {
        const [c2, a2] = this.tool('iptables', ['-t', j.table, '-I', j.chain, '1', ...j.args]);
        run(c2, a2);
      }
    }
    let synced = 0;
    const ready = new Promise<void>((resolve) => {
      const one = () => { if (++synced === 2) resolve(); };
      const key = (o: KObj) => `${o.metadata.namespace}/${o.metadata.name}`;
      this.runs.push(informer(this.o.client, '/api/v1/services', (t, obj) => {
        if (t === 'DELETED') this.services.delete(key(obj)); else this.services.set(key(obj), obj as unknown as K8sService);
        this.changed();
      }, this.abort.signal, one));
      this.runs.push(informer(this.o.client, '/apis/discovery.k8s.io/v1/endpointslices', (t, obj) => {
        if (t === 'DELETED') this.slices.delete(key(obj)); else this.slices.set(key(obj), obj as unknown as K8sEndpointSlice);
        this.changed();
      }, this.abort.signal, one));
    });
    await ready;
    await this.syncNow();
  }

  private changed(): void {
    this.dirty = true;
    this.schedule(this.o.syncDelayMs ?? 0);
  }

  private schedule(delayMs: number): void {
    if (this.timer || this.abort.signal.aborted) return;
    const now = Date.now();
    const at = Math.max(now + delayMs, this.lastStartMs + (this.o.minSyncPeriodMs ?? 0));
    this.timer = setTimeout(() => { this.timer = null; void this.syncNow(); }, at - now);
  }

  /** Run one sync now (waits for a running one first). */
  async syncNow(): Promise<void> {
    while (this.syncing) await this.syncing;
    this.syncing = this.doSync();
    try { await this.syncing; } finally { this.syncing = null; }
  }

  private async doSync(): Promise<void> {
    this.dirty = false;
    this.lastStartMs = Date.now();
    const startNs = nowNs();
    const sps = buildServicePorts([...this.services.values()], [...this.slices.values()], this.o.nodeName);
    const routed = routedEndpoints(sps);
    let error: string | null = null, flushed: string[] = [], deleted: string[] = [], pending = false;
    if (this.o.mode === 'nftables') {
      const r = nftSync(sps, { podCIDR: this.o.podCIDR, serviceCIDR: this.o.serviceCIDR, nodePortIPs: this.o.nodePortIPs, staleDeleteMs: this.o.staleDeleteMs }, this.nftState, Date.now());
      const [c, a] = this.tool('nft', ['-f', '-']);
      const res = await runAsync(c, a, r.text);
      if (res.code === 0) { this.nftState = r.next; flushed = r.flushed; deleted = r.deleted; pending = r.pendingDeletes; } else error = res.stderr.trim().split('\n')[0] ?? 'nft failed';
    } else {
      const r = iptablesSync(sps, { podCIDR: this.o.podCIDR }, this.iptChains);
      const [c, a] = this.tool('iptables-restore', ['--noflush']);
      const res = await runAsync(c, a, r.text);
      if (res.code === 0) { this.iptChains = r.natChains; deleted = r.deleted; } else error = res.stderr.trim().split('\n')[0] ?? 'iptables-restore failed';
    }
    const endNs = nowNs();
    const rec: SyncRecord = {
      seq: ++this.seq, mode: this.o.mode, startNs, endNs,
      added: [...routed].filter((x) => !this.routed.has(x)), removed: [...this.routed].filter((x) => !routed.has(x)),
      flushedChains: flushed, deletedChains: deleted, error,
    };
    if (!error) this.routed = routed;
    this.syncs.push(rec);
    if (pending) this.schedule(this.o.staleDeleteMs ?? 1000);
    if (this.dirty) this.schedule(this.o.syncDelayMs ?? 0);
  }

  /** endpoints routed by the last successful sync ("ns/svc:port|ip:port") */
  routedNow(): string[] { return [...this.routed]; }

  async stop(): Promise<void> {
    this.abort.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    while (this.syncing) await this.syncing;
    await Promise.allSettled(this.runs);
  }
}

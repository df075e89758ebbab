/** Running the strace and ebpf sources through their Source interface in tests: sink, context, options. */
import { expect } from 'vitest';
import type { Sink } from '../../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions, SignalSeen } from '../../recorder/source.js';
import type { RtEvent } from '../../schemas/events.js';
import { create as createStrace } from '../../recorder/sources/strace/index.js';
import { create as createEbpf } from '../../recorder/sources/ebpf/index.js';

export function memSink(): Sink & { events: RtEvent[] } {
  const events: RtEvent[] = [];
  return {
    events, event: (e) => events.push(e), packet: () => {}, conntrack: () => {}, k8sObject: () => {}, nftSnapshot: () => {},
    probeRequest: () => {}, dropped: () => {},
  };
}

/** A context like record's: pod changes and SIGTERMs seen by ebpf reach their subscribers synchronously. */
export function ctxFor(opts: RecordOptions, log: string[] = []): RecordContext {
  const cbs: Array<() => void> = [];
  const sigs: Array<(s: SignalSeen) => void> = [];
  return {
    opts, pods: new Map(), onPodsChanged: (cb) => cbs.push(cb), podsChanged: () => cbs.forEach((c) => c()),
    onSignal: (cb) => sigs.push(cb), signalSeen: (s) => sigs.forEach((c) => c(s)),
    requestStop: () => {}, log: (l) => log.push(l),
  };
}

export function baseOpts(over: Partial<RecordOptions> = {}): RecordOptions {
  return {
    out: '/dev/null', namespace: 'default', iface: [], snaplen: 128, rate: 10, concurrency: 1, settle: 0, packets: true,
    strace: true, ebpf: true, nft: true, conntrack: true, kube: false, pid: [], ...over,
  };
}

/** Preflight (must pass) and start both sources, ebpf first; their sinks collect the events. */
export async function startTracers(opts: RecordOptions, ctx: RecordContext) {
  const st = createStrace(opts), eb = createEbpf(opts);
  const pst = await st.preflight(ctx), peb = await eb.preflight(ctx);
  expect(pst.ok, pst.detail).toBe(true);
  expect(peb.ok, peb.detail).toBe(true);
  const sst = memSink(), seb = memSink();
  await eb.start(seb, ctx);
  await st.start(sst, ctx);
  return { st, eb, sst, seb, peb };
}

/**
 * The recorder's one clock for receipt stamps: realtime ns with sub-ms resolution. performance.timeOrigin
 * is the realtime instant the process started (sub-ms) and performance.now() the monotonic time since,
 * so stamps never step backwards and agree across every source of one recording.
 */
export function nowNs(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1e6);
}

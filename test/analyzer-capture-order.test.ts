/**
 * Packets are judged in capture order across interfaces. A node's capture stores its rows per interface
 * (a chunk of one interface's frames at a time, or one capture process each), so row order can put one
 * interface's whole handshake before another interface's SYN of the same connection. Read in row order,
 * that SYN opened a "new" connection whose SYN-ACK (de-NATed to the VIP on the pod bridge) never matched:
 * every remote client's connection of a 2.7 s stretch became a false "SYN never answered" (seen in CI on
 * the fast lab's two-node scenario: 40 remote failures where the truth has 18).
 * Fixture: that run's merged bundle (lab-node + lab-node2) and the lab's truth, as recorded.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';

const here = dirname(fileURLToPath(import.meta.url));
const FIX = join(here, '..', 'fixtures', 'multinode');

describe('capture order across interfaces', () => {
  it('a merged two-node bundle whose rows are stored per interface: every remote failure as in the truth, no false SYN timeout', async () => {
    const truth = JSON.parse(readFileSync(join(FIX, 'two-node.truth.json'), 'utf8')) as { failures: Array<{ from: string }> };
    const r = await BundleReader.open(join(FIX, 'two-node-merged.rtb.gz'));
    let a;
    try { a = await analyzeBundle(r); } finally { r.close(); }
    const remoteTruth = truth.failures.filter((f) => f.from === 'client-log').length;
    const localTruth = truth.failures.filter((f) => f.from === 'conntrack').length;
    const remote = a.failures.filter((f) => f.client.startsWith('10.244.1.2:'));
    expect(remoteTruth).toBe(18);
    expect(remote).toHaveLength(remoteTruth);
    for (const f of remote) { expect(f.cause).toBe('listener-closed'); expect(f.node).toBe('lab-node2'); }
    expect(a.failures.filter((f) => f.evidence.some((e) => e.startsWith('SYN never answered')))).toEqual([]);
    expect(a.failures).toHaveLength(localTruth + remoteTruth);
  });
});

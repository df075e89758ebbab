/**
 * The real node's second node (lab run --real --scenario two-node): node 2's bundle as its recorder wrote it
 * (real kube-proxy's DNAT in node 2's netns, captured on cni0 and n1link) and the truth of that run (the remote
 * client's own log, each failure's connection and backend from node 2's conntrack).
 *
 * What the real run taught: node 2's capture of the link started 24 ms after the bridge's, so the first
 * connection's SYN-ACK was captured only de-NATed on the bridge (from the VIP, not from the pod the SYN was
 * DNATed to): a connection the client completed (it sent its request, the pod answered) was reported as a
 * "SYN never answered" failure. The client's ACK proves the SYN-ACK reached it.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import type { Truth } from '../lab/truth.js';

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'multinode');

/** a run's truth and the analysis of its node-2 bundle, as recorded */
async function run(name: string) {
  const truth = JSON.parse(readFileSync(join(FIX, `${name}.truth.json`), 'utf8')) as Truth;
  const r = await BundleReader.open(join(FIX, `${name}-node2.rtb.gz`));
  try { return { truth, a: await analyzeBundle(r) }; } finally { r.close(); }
}

describe('real two-node: node 2 recorded alone', () => {
  it('every failure of the remote client, as its log and node 2\'s conntrack say, and no other', async () => {
    const { truth, a } = await run('real-two-node');
    const remote = truth.failures.filter((f) => f.node === 'lab-node2');
    expect(remote).toHaveLength(28);
    expect(a.bundle.node).toBe('lab-node2');
    // node 2 sees only its own clients' connections
    expect(a.failures.map((f) => f.client).sort()).toEqual(remote.map((f) => f.client).sort());
    for (const t of remote) {
      const f = a.failures.find((x) => x.client === t.client)!;
      expect(f.backend.pod, t.client).toBe(t.backendPod);
      expect(f.node).toBe('lab-node2');
      expect(f.evidence.join('\n')).toMatch(new RegExp(`conntrack: ${t.client} -> 10.96.0.10:80 DNAT to ${t.backendIp}:8080`));
    }
    // the connection whose SYN-ACK was captured only de-NATed, at the start of the capture, succeeded
    expect(a.failures.find((f) => f.client === '10.244.1.2:59156')).toBeUndefined();
  });
});

describe('real two-node, another run: an ICMP error at the start of the capture', () => {
  it('host unreachable 266 ms into node 2\'s capture, about a connection never captured, is set aside as before-capture, not a failure', async () => {
    // CI run: the client's own log has no failure then; the SYN it answers was sent before node 2's recorder started
    const { truth, a } = await run('real-two-node-icmp');
    expect(a.failures.find((f) => f.client === '10.244.1.2:34362')).toBeUndefined();
    expect(a.ignored?.find((x) => x.group === 'before-capture')?.why).toMatch(/^ICMP host-unreachable from 10\.244\.1\.1 about 10\.244\.1\.2:34362 -> 10\.96\.0\.10:80 at .* on cni0: \d+\.\d+ ms after that interface's capture began, no SYN of it captured/);
    // the remote client's failures are all still found
    const remote = truth.failures.filter((f) => f.node === 'lab-node2').map((f) => f.client).sort();
    expect(remote.length).toBeGreaterThan(10);
    expect(a.failures.map((f) => f.client).filter((c) => c.startsWith('10.244.1.2:')).sort()).toEqual(remote);
  });
});

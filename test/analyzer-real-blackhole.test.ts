/**
 * The real node's local-blackhole, two runs of test/e2e-real.test.ts whose analysis missed failures the truth has
 * (bundles and truths in fixtures/analysis, the truth read from the components' own records: the NodePort client's
 * log, conntrack). With no endpoint anywhere kube-proxy rejects, and the kernel rate-limits the ICMP errors (six,
 * then one a second), so most SYNs to the NodePort get no answer and their client times out after 1 s.
 *
 * real-local-blackhole-late-syn (nftables, a CI run): one SYN (192.168.77.2:56276, 18:22:44.7816) went unanswered
 * 1000.8 ms; the kernel retransmitted it just as the client's 1 s timeout fired, the replacement pod had become ready
 * meanwhile, and the retransmission was answered: the client closed the connection 0.15 ms after the handshake
 * without sending a byte, and its log says timeout. The analysis saw a completed handshake and reported nothing.
 *
 * real-local-blackhole-reused-port (iptables): the client reused ports 48804 and 48904, whose earlier connections to
 * the old pod lingered in conntrack (TIME_WAIT, 120 s). The new SYN destroys such a flow, and that DESTROY row
 * (DNAT to the old pod, stamped 0.4 ms after the SYN) was taken for the new connection's: two rejected SYNs were
 * reported listener-closed at the old pod, 1.3 s after its rule was gone, and two truth timeouts matched nothing.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { analyzeBundle } from '../analyzer/analyze.js';
import { BundleReader } from '../analyzer/bundle-reader.js';
import { FailureDetector } from '../analyzer/model/failures.js';
import { TCP } from '../schemas/rows.js';
import { pkt } from './helpers/packets.js';
import { nsFromIso, type Analysis } from '../schemas/analysis.js';
import type { Truth } from '../lab/truth.js';
import { compareWithTruth, EXPECT } from './e2e-truth.js';
import { realClaims } from './real-claims.js';

const FIX = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'analysis');

async function run(name: string): Promise<{ a: Analysis; truth: Truth }> {
  const truth = JSON.parse(readFileSync(join(FIX, `${name}.truth.json`), 'utf8')) as Truth;
  const r = await BundleReader.open(join(FIX, `${name}.rtb.gz`));
  try { return { truth, a: JSON.parse(JSON.stringify(await analyzeBundle(r))) as Analysis }; } finally { r.close(); }
}

describe('real local-blackhole (nftables): a SYN answered only on its retransmission, after the client gave up', () => {
  it('the analysis agrees with the truth, failure by failure, as test/e2e-real.test.ts judges it', async () => {
    const { a, truth } = await run('real-local-blackhole-late-syn');
    expect(truth.mode).toBe('nftables');
    const late = truth.failures.filter((f) => f.client === '?' && f.kind === 'timeout' && f.atNs === 1796149365782062600);
    expect(late).toHaveLength(1);
    const { problems } = compareWithTruth(a, truth, EXPECT['local-blackhole']!);
    expect([...problems, ...realClaims(a, truth)]).toEqual([]);
  });

  it('reports it as a no-endpoint failure on the Local NodePort path at its first SYN, with no backend', async () => {
    const { a } = await run('real-local-blackhole-late-syn');
    const f = a.failures.find((x) => x.client === '192.168.77.2:56276')!;
    expect(f).toBeDefined();
    expect(f.at).toBe('2026-12-01T18:22:44.781563Z');
    expect(f.service).toBe('192.168.77.1:30080');
    // the retransmission reached the replacement pod after the client had given up: not this failure's backend
    expect(f.backend).toEqual({ ip: null, port: null, pod: null });
    expect(f.cause).toBe('no-endpoint');
    expect(f.path).toEqual({ path: 'node-port', addr: '*:30080', policy: 'Local' });
    const ev = f.evidence.join('\n');
    expect(ev).toMatch(/SYN unanswered for 1000\.833 ms, answered only on its retransmission at 2026-12-01T18:22:45\.782396Z; the client closed \(FIN\) 0\.152 ms after that handshake without sending a byte/);
    expect(ev).toMatch(/only the retransmission was tracked, .* DNAT to 10\.244\.0\.3:8080 \(default\/web-5fcbb6b9b6-7zbsz\)/);
    // the replacement pod, which answered the retransmission, is charged with no failure
    expect(a.pods.find((p) => p.name === 'web-5fcbb6b9b6-7zbsz')?.failedConnections ?? 0).toBe(0);
    // connections answered at once by the replacement (SYN-ACK, request, response) are not failures
    const after = a.failures.filter((x) => x.service === '192.168.77.1:30080' && nsFromIso(x.at)! > nsFromIso(f.at)!);
    expect(after).toEqual([]);
  });
});

describe('a handshake the client gave up on (the failure detector alone)', () => {
  const C = '192.168.77.2', S = '192.168.77.1';
  /** SYN at 1 s, its retransmission at 2 s answered at once, then what the client does */
  function late(then: Array<[number, number, number?]>): string[][] {
    const d = new FailureDetector();
    d.packet(pkt(1e9, C, 5000, S, 30080, TCP.SYN, 0, 'eth0'));
    d.packet(pkt(2e9, C, 5000, S, 30080, TCP.SYN, 0, 'eth0'));
    d.packet(pkt(2e9 + 100e3, S, 30080, C, 5000, TCP.SYN | TCP.ACK, 0, 'eth0'));
    for (const [t, f, n] of then) d.packet(pkt(t, C, 5000, S, 30080, f, n ?? 0, 'eth0'));
    d.sweep(20e9, true);
    return d.candidates().map((c) => [String(c.ts), [...c.kinds].join(), String(c.lateSyn ?? null)]);
  }

  it('closed without a byte right after the late handshake (FIN or RST): a failure at the first SYN', () => {
    expect(late([[2e9 + 250e3, TCP.FIN | TCP.ACK]])).toEqual([[String(1e9), 'syn-late-abandoned', String(2e9)]]);
    expect(late([[2e9 + 250e3, TCP.RST]])).toEqual([[String(1e9), 'syn-late-abandoned', String(2e9)]]);
  });

  it('not when the client used the connection (a slow connect, not a failure), nor held it unused for longer than 1 s', () => {
    expect(late([[2e9 + 200e3, TCP.ACK], [2e9 + 300e3, TCP.PSH | TCP.ACK, 80], [2e9 + 900e3, TCP.FIN | TCP.ACK]])).toEqual([]);
    expect(late([[2e9 + 200e3, TCP.ACK], [3.5e9, TCP.FIN | TCP.ACK]])).toEqual([]);
  });

  it('not when the first SYN was answered (a connect-only client, such as a TCP health check)', () => {
    const d = new FailureDetector();
    d.packet(pkt(1e9, C, 5001, S, 30080, TCP.SYN, 0, 'eth0'));
    d.packet(pkt(1e9 + 100e3, S, 30080, C, 5001, TCP.SYN | TCP.ACK, 0, 'eth0'));
    d.packet(pkt(1e9 + 200e3, C, 5001, S, 30080, TCP.FIN | TCP.ACK, 0, 'eth0'));
    d.sweep(20e9, true);
    expect(d.candidates()).toEqual([]);
  });
});

describe('real local-blackhole (iptables): a reused client port whose older flow lingered in conntrack', () => {
  it('the analysis agrees with the truth, failure by failure, as test/e2e-real.test.ts judges it', async () => {
    const { a, truth } = await run('real-local-blackhole-reused-port');
    expect(truth.mode).toBe('iptables');
    const { problems } = compareWithTruth(a, truth, EXPECT['local-blackhole']!);
    expect([...problems, ...realClaims(a, truth)]).toEqual([]);
  });

  it('a rejected SYN on a port whose old flow conntrack destroyed at that SYN has no backend: no-endpoint, not the old pod', async () => {
    const { a } = await run('real-local-blackhole-reused-port');
    for (const [client, at] of [['192.168.77.2:48804', '2026-12-01T19:17:46.422884Z'], ['192.168.77.2:48904', '2026-12-01T19:17:47.024738Z']] as const) {
      const f = a.failures.find((x) => x.client === client)!;
      expect(f.at, client).toBe(at);
      expect(f.backend, client).toEqual({ ip: null, port: null, pod: null });
      expect(f.cause, client).toBe('no-endpoint');
      expect(f.path, client).toEqual({ path: 'node-port', addr: '*:30080', policy: 'Local' });
      expect(f.evidence.join('\n'), client).not.toMatch(/DNAT to 10\.244\.0\.2/);
    }
    // the old pod is charged only with what reached it while this node still routed to it
    const old = a.pods.find((p) => p.name === 'web-6d68d8b544-snpw5')!;
    const rule = nsFromIso(old.ruleRemovedAt!)!;
    expect(a.failures.filter((f) => f.backend.pod === 'default/web-6d68d8b544-snpw5' && nsFromIso(f.at)! > rule + 50e6)).toEqual([]);
  });
});

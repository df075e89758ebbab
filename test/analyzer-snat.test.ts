/**
 * A masqueraded connection on a real node (kube-proxy SNATs off-cluster sources; with br_netfilter the
 * bridge sees the SYN source-NATed and the replies already de-NATed): the failure detector joins both
 * halves through conntrack's reply tuple. Packets as captured on cni0 in a real-node race run.
 */
import { describe, expect, it } from 'vitest';
import { FailureDetector } from '../analyzer/model/failures.js';
import { TCP } from '../schemas/rows.js';
import { pkt } from './helpers/packets.js';

// 192.168.77.1:22455 -> 10.96.0.10:80, DNAT to 10.244.0.2:8080, SNAT to 10.244.0.1:64985
const ct = { orig_src: '192.168.77.1', orig_sport: 22455, reply_src: '10.244.0.2', reply_sport: 8080, reply_dst: '10.244.0.1', reply_dport: 64985 };
const served = [
  pkt(1e9, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.SYN),
  pkt(1e9 + 50e3, '10.244.0.2', 8080, '192.168.77.1', 22455, TCP.SYN | TCP.ACK),
  pkt(1e9 + 60e3, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.ACK),
  pkt(1e9 + 70e3, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.PSH | TCP.ACK, 84),
  pkt(1e9 + 90e3, '10.244.0.2', 8080, '192.168.77.1', 22455, TCP.PSH | TCP.ACK, 120),
  pkt(1e9 + 99e3, '10.244.0.2', 8080, '192.168.77.1', 22455, TCP.FIN | TCP.ACK),
];

describe('source NAT on the bridge', () => {
  it('without conntrack\'s NAT view, a refused SYN looks like an unanswered SYN of the bridge address (the bug the real node showed)', () => {
    const d = new FailureDetector();
    // a served request is told by the client's own ACK (it got a SYN-ACK), whatever address the SYN-ACK had
    for (const p of served) d.packet(p);
    d.packet(pkt(2e9, '10.244.0.1', 64986, '10.244.0.2', 8080, TCP.SYN));
    d.packet(pkt(2e9 + 50e3, '10.244.0.2', 8080, '192.168.77.1', 22456, TCP.RST | TCP.ACK));
    d.sweep(10e9, true);
    expect(d.candidates().map((c) => [c.client, c.cport, [...c.kinds]])).toEqual([['10.244.0.1', 64986, ['syn-timeout']]]);
  });

  it('with it, the connection is one flow of the original client and nothing failed', () => {
    const d = new FailureDetector();
    d.addSnat(ct);
    for (const p of served) d.packet(p);
    d.sweep(10e9, true);
    expect(d.candidates()).toEqual([]);
  });

  it('a SYN into a pod whose network is gone is one failure of the original client (merges with its probe record)', () => {
    const d = new FailureDetector();
    d.addSnat(ct);
    d.packet(pkt(1e9, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.SYN));
    d.sweep(10e9, true);
    const c = d.candidates();
    expect(c.map((x) => [x.client, x.cport, [...x.kinds]])).toEqual([['192.168.77.1', 22455, ['syn-timeout']]]);
    expect(c[0]!.views[0]).toMatchObject({ server: '10.244.0.2', sport: 8080 });
  });

  it('replies that reach the capture still source-NATed (no br_netfilter) are joined too', () => {
    const d = new FailureDetector();
    d.addSnat(ct);
    d.packet(pkt(1e9, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.SYN));
    d.packet(pkt(1e9 + 50e3, '10.244.0.2', 8080, '10.244.0.1', 64985, TCP.RST | TCP.ACK));
    expect(d.candidates().map((x) => [x.client, x.cport, [...x.kinds]])).toEqual([['192.168.77.1', 22455, ['syn-rst']]]);
  });
});

describe('a NAT port reused as another connection\'s own port', () => {
  it('the kubelet\'s probe from 10.244.0.1:45756, 2 s after a masqueraded probe used that port, is its own served connection', () => {
    const d = new FailureDetector();
    // first flow: 192.168.77.1:28699 -> VIP, SNAT to 10.244.0.1:45756 (conntrack events 0.896 s .. 1.150 s)
    d.addSnat({ orig_src: '192.168.77.1', orig_sport: 28699, reply_src: '10.244.0.4', reply_sport: 8080, reply_dst: '10.244.0.1', reply_dport: 45756, first: 0.896e9 });
    // second flow: the kubelet 10.244.0.1:45756 -> pod, SNAT to 47685 to avoid the clash (2.901 s ..)
    d.addSnat({ orig_src: '10.244.0.1', orig_sport: 45756, reply_src: '10.244.0.4', reply_sport: 8080, reply_dst: '10.244.0.1', reply_dport: 47685, first: 2.901e9 });
    const seen = [
      pkt(0.896e9, '10.244.0.1', 45756, '10.244.0.4', 8080, TCP.SYN), pkt(0.8961e9, '10.244.0.4', 8080, '192.168.77.1', 28699, TCP.SYN | TCP.ACK),
      pkt(0.897e9, '10.244.0.1', 45756, '10.244.0.4', 8080, TCP.PSH | TCP.ACK, 84), pkt(0.898e9, '10.244.0.4', 8080, '192.168.77.1', 28699, TCP.PSH | TCP.ACK, 120),
      pkt(1.126e9, '10.244.0.4', 8080, '192.168.77.1', 28699, TCP.FIN | TCP.ACK),
      pkt(2.9009e9, '10.244.0.1', 47685, '10.244.0.4', 8080, TCP.SYN), pkt(2.901e9, '10.244.0.4', 8080, '10.244.0.1', 45756, TCP.SYN | TCP.ACK),
      pkt(2.9035e9, '10.244.0.4', 8080, '10.244.0.1', 45756, TCP.PSH | TCP.ACK, 138), pkt(2.9037e9, '10.244.0.4', 8080, '10.244.0.1', 45756, TCP.FIN | TCP.ACK),
    ];
    for (const p of seen) d.packet(p);
    d.sweep(10e9, true);
    expect(d.candidates()).toEqual([]);
  });
});

describe('an unanswered SYN retransmitted', () => {
  it('the retransmission 1 s later is the same (original) client\'s connection: one failure', () => {
    const d = new FailureDetector();
    d.addSnat({ ...ct, first: 1e9 });
    d.packet(pkt(1e9, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.SYN));
    d.packet(pkt(2.016e9, '10.244.0.1', 64985, '10.244.0.2', 8080, TCP.SYN));
    d.sweep(10e9, true);
    expect(d.candidates().map((x) => [x.client, x.cport, [...x.kinds]])).toEqual([['192.168.77.1', 22455, ['syn-timeout']]]);
  });
});

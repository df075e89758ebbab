// Child process for the crash test: writes events, packets and probe rows continuously until killed.
import { BundleWriter } from '../../recorder/bundle-writer.js';
import { ev } from '../../schemas/events.js';

const out = process.argv[2]!;
const w = new BundleWriter(out, { overwrite: true });
w.setMeta('started_ns', Date.now() * 1e6);
w.setSource('strace', { status: 'running', clock: 'kernel' });
w.setSource('packets', { status: 'running', clock: 'kernel' });
let i = 0;
const frame = new Uint8Array(60).fill(7);
setInterval(() => {
  for (let k = 0; k < 50; k++) {
    const now = Date.now() * 1e6;
    w.event(ev('marker', now, 'recorder', `n:${i++}`, { text: 'x'.repeat(40) }));
    w.packet({
      ts_ns: now, iface: 'cni0', linktype: 1, caplen: 60, len: 60, l3: 'ip4', src: '10.244.0.2', dst: '10.244.0.3',
      proto: 'tcp', sport: 40000, dport: 80, tcp_flags: 2, seq: i, ack: 0, payload_len: 0, icmp_type: null, icmp_code: null,
      inner_src: null, inner_dst: null, inner_proto: null, inner_sport: null, inner_dport: null, data: frame,
    });
  }
}, 2);
process.stdout.write('ready\n');

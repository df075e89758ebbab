/**
 * A tool that dies while recording marks its source failed (with the instant), so the bundle does not
 * present the silence after it as fact. Fake tools stand in for tcpdump and conntrack.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Sink } from '../recorder/bundle-writer.js';
import type { RecordContext, RecordOptions } from '../recorder/source.js';

const dir = mkdtempSync(join(tmpdir(), 'rt-srcfail-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sink: Sink = { event() {}, packet() {}, conntrack() {}, k8sObject() {}, nftSnapshot() {}, probeRequest() {}, dropped() {} };
const opts = { out: '/dev/null', namespace: 'default', iface: ['lo'], snaplen: 128, rate: 1, concurrency: 1, settle: 0 } as unknown as RecordOptions;
function context(failed: Array<[string, string]>): RecordContext {
  return { opts, pods: new Map(), onPodsChanged() {}, podsChanged() {}, requestStop() {}, log() {}, sourceFailed: (n, r) => failed.push([n, r]) };
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('sources report a tool that dies mid-recording', () => {
  it('packets: tcpdump exiting on its own marks the source failed; a normal stop does not', async () => {
    const fake = join(dir, 'tcpdump');
    // a pcap header on stdout, "listening on" on stderr, then it dies with status 1
    writeFileSync(fake, `#!/bin/sh
[ "$1" = "--version" ] && { echo "tcpdump version 4.99.3"; exit 0; }
printf '\\324\\303\\262\\241\\002\\000\\004\\000\\000\\000\\000\\000\\000\\000\\000\\000\\200\\000\\000\\000\\001\\000\\000\\000'
echo "listening on lo" >&2
sleep 0.3
echo "tcpdump: device went away" >&2
exit 1
`);
    chmodSync(fake, 0o755);
    process.env.ROLLTRACE_TCPDUMP = fake;
    process.env.ROLLTRACE_PACKETS_BACKEND = 'tcpdump';
    try {
      const { create } = await import('../recorder/sources/packets/index.js');
      const failed: Array<[string, string]> = [];
      const src = create(opts);
      expect((await src.preflight(context(failed))).ok).toBe(true);
      await src.start(sink, context(failed));
      await sleep(800);
      await src.stop();
      expect(failed).toHaveLength(1);
      expect(failed[0]![0]).toBe('packets');
      expect(failed[0]![1]).toMatch(/tcpdump on lo exited 1: .*device went away.* at \d{4}-/);

      // a tool that is still running when the recorder stops is not a failure
      writeFileSync(fake, `#!/bin/sh
[ "$1" = "--version" ] && { echo "tcpdump version 4.99.3"; exit 0; }
echo "listening on lo" >&2
exec sleep 30
`);
      const failed2: Array<[string, string]> = [];
      const src2 = create(opts);
      await src2.preflight(context(failed2));
      await src2.start(sink, context(failed2));
      await sleep(200);
      await src2.stop();
      expect(failed2).toEqual([]);
    } finally {
      delete process.env.ROLLTRACE_TCPDUMP;
      delete process.env.ROLLTRACE_PACKETS_BACKEND;
    }
  });

  it('conntrack: conntrack -E ending early marks the source failed', async () => {
    const { create } = await import('../recorder/sources/conntrack/index.js');
    const failed: Array<[string, string]> = [];
    // the command prefix runs instead of conntrack: it exits 3 after a moment
    const src = create(opts, { exec: ['sh', '-c', 'sleep 0.4; exit 3', '--'] });
    await src.start(sink, context(failed));
    await sleep(800);
    await src.stop();
    expect(failed).toHaveLength(1);
    expect(failed[0]).toEqual(['conntrack', expect.stringMatching(/conntrack -E ended early \(exit 3\) at \d{4}-/)]);
  });
});

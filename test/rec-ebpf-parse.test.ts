import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { EbpfParser, decodeSockaddr, unescapeHex } from '../recorder/sources/ebpf/parse.js';
import { parseTracepointFormat } from '../recorder/sources/ebpf/format.js';
import { buildProgram } from '../recorder/sources/ebpf/program.js';
import { measureMonotonicToRealtime, OffsetWatch, type ClockOffset } from '../recorder/sources/ebpf/clock.js';
import { PodCgroupIndex } from '../recorder/sources/ebpf/index.js';

const F = (p: string) => readFileSync(new URL(`../fixtures/bpftrace/${p}`, import.meta.url), 'utf8');
const fmt = (n: string) => parseTracepointFormat(F(`format-${n}.txt`));
const OFFSET = 1_700_000_000_000_000_000;

describe('tracepoint formats of kernel 6.18 (captured here)', () => {
  it('fields and the sk_rst_reason table', () => {
    const rst = fmt('tcp_send_reset');
    expect(rst.fields.get('saddr')).toMatchObject({ array: 28, size: 28 });
    expect(rst.fields.has('sport')).toBe(false);
    expect(rst.symbols.get('reason')!.get(1)).toBe('NO_SOCKET');
    expect(rst.symbols.get('reason')!.get(11)).toBe('TCP_ABORT_ON_CLOSE');
    const ss = fmt('inet_sock_set_state');
    expect([...ss.fields.keys()]).toEqual(expect.arrayContaining(['oldstate', 'newstate', 'sport', 'family', 'saddr_v6', 'skaddr']));
    expect(fmt('signal_generate').fields.get('comm')).toMatchObject({ array: 16 });
    expect(fmt('signal_generate').fields.get('pid')).toMatchObject({ offset: 36, size: 4, signed: true });
    expect(ss.fields.get('sport')).toMatchObject({ offset: 24, size: 2, signed: false });
  });

  it('generates the program that produced the fixture output, and adapts to an older layout', () => {
    const input = { sockState: fmt('inet_sock_set_state'), sendReset: fmt('tcp_send_reset'), signalGenerate: fmt('signal_generate'), processExit: fmt('sched_process_exit') };
    const p = buildProgram({ ...input, btf: true });
    expect(p.text).toBe(F('program-6.18.bt'));
    expect(p.resetLayout).toBe('sockaddr');
    expect(p.missing).toEqual([]);
    // a 5.x-style tcp_send_reset (sport/dport, 4-byte addresses, no reason)
    const old = parseTracepointFormat(`name: tcp_send_reset
format:
\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
`);
    const q = buildProgram({ ...input, sendReset: old, btf: false });
    expect(q.resetLayout).toBe('ports');
    expect(q.text).toContain('args->sport, args->dport');
    expect(q.text).not.toContain('struct sock');
    expect(buildProgram({ btf: false }).missing).toHaveLength(4);
  });

  it('fieldOffsets: fields read at their format offsets, filters as if; a field of unknown signedness through args->', () => {
    const input = { sockState: fmt('inet_sock_set_state'), sendReset: fmt('tcp_send_reset'), signalGenerate: fmt('signal_generate'), processExit: fmt('sched_process_exit') };
    const offsets = { skNet: 48, netInum: 176, exitCode: 1164, skbDev: 16, devNet: 264 };
    const p = buildProgram({ ...input, btf: true, offsets, fieldOffsets: true });
    expect(p.text.match(/args->\w+/g)).toEqual(['args->saddr_v6']);
    expect(p.text.match(/\$a = \(uint64\)args;/g)).toHaveLength(3);
    expect(p.text).toContain('if (*(int32 *)($a + 8) == 15 || *(int32 *)($a + 8) == 9) {');
    expect(p.text).toContain('ntop(2, *(uint32 *)($a + 32))');
    expect(p.text).toContain('str($a + 20, 16)');
    expect(p.text).toContain('buf($a + 60, 28)');
    expect(p.text).toContain('*(uint32 *)(*(uint64 *)(*(uint64 *)((uint64)*(uint64 *)($a + 8) + 16) + 264) + 176)');
    expect(p.features).toEqual(buildProgram({ ...input, btf: true }).features);
    const unsigned = parseTracepointFormat(F('format-signal_generate.txt').replace(/\s*signed:\d;/g, ''));
    expect(buildProgram({ signalGenerate: unsigned, btf: true, fieldOffsets: true }).text).toContain('args->sig == 15');
  });
});

describe('parser on real bpftrace 0.17 output', () => {
  const reasons = fmt('tcp_send_reset').symbols.get('reason');
  const run = (text: string, podOfCgroup = (_: number): string | null => null) => {
    const p = new EbpfParser({ offsetNs: OFFSET, resetReasons: reasons, podOfCgroup });
    const events = text.split('\n').flatMap((l) => p.line(l));
    return { p, events };
  };

  it('golden events', () => {
    const { p, events } = run(F('output-6.18.txt'));
    expect({ beginNs: p.beginNs, malformed: p.malformed, events }).toEqual(JSON.parse(F('output-6.18.expected.json')));
  });

  it('listen, RST with reason, SIGTERM generated, listener closed by the kernel, exit; SIGKILL exit', () => {
    const { events } = run(F('output-6.18.txt'));
    expect(events.map((e) => e.kind)).toEqual([
      'listen', 'listen', 'tcp-reset-sent', 'tcp-reset-sent', 'signal', 'listener-closed', 'listener-closed', 'process-exit',
      'listen', 'signal', 'process-exit', 'listener-closed',
    ]);
    const [l4, l6, r4, r6, term, c4, c6, exit] = events;
    expect(l4!.attrs).toMatchObject({ addr: '0.0.0.0', port: 8080, how: 'tcp-state', comm: 'node', netns: 4026532177 });
    expect(l6!.attrs).toMatchObject({ addr: '::', port: 8081 });
    expect(r4!.attrs).toMatchObject({ saddr: '127.0.0.1', sport: 9, daddr: '127.0.0.1', reason: 'NO_SOCKET' });
    expect(r6!.attrs).toMatchObject({ saddr: '::1', sport: 9, daddr: '::1' });
    expect(r6!.subject).toMatch(/^\[::1\]:\d+$/);
    expect(term!.attrs).toMatchObject({ signame: 'SIGTERM', signo: 15, phase: 'generated', comm: 'node', sender_comm: 'capture.sh', result: 0 });
    expect(c4!.attrs).toMatchObject({ port: 8080, how: 'tcp-state', pid: (l4!.attrs as { pid: number }).pid });
    expect(c6!.attrs).toMatchObject({ port: 8081 });
    expect(exit!.attrs).toMatchObject({ code: 0, signal: null, comm: 'node' });
    expect(events[10]!.attrs).toMatchObject({ code: null, signal: 'SIGKILL', comm: 'python3' });
    // converted to realtime with the offset, in order
    expect(term!.ts_ns).toBe(870891985324 + OFFSET);
    expect(c4!.ts_ns - term!.ts_ns).toBeGreaterThan(0);
  });

  it('a socketless RST (NO_SOCKET) names the network namespace of the device that received the SYN', () => {
    // output-6.18-rst-netns.txt: program-6.18.bt while `bash -c 'exec 3<>/dev/tcp/127.0.0.1/9'` (and ::1)
    // ran in a netns of inode 4026532457 (only that namespace's lines kept: the tracepoint sees every one)
    const { events } = run(F('output-6.18-rst-netns.txt'));
    expect(events.map((e) => [e.kind, (e.attrs as { reason: string }).reason, (e.attrs as { netns: number }).netns])).toEqual([
      ['tcp-reset-sent', 'NO_SOCKET', 4026532457], ['tcp-reset-sent', 'NO_SOCKET', 4026532457]]);
  });

  it('maps cgroup ids to pods', () => {
    const { events } = run(F('output-6.18.txt'), (id) => (id === 1 ? 'pod-uid-1' : null));
    expect(events[0]!.attrs).toMatchObject({ cgroup_id: 1, pod_uid: 'pod-uid-1' });
  });

  it('a cgroup the last scan missed (container started after it) falls back to the pid\'s own cgroup for listen and close', () => {
    const pidOf = new Map<number, string>();
    const p = new EbpfParser({ offsetNs: OFFSET, resetReasons: reasons, podOfCgroup: () => null, podOfPid: (pid) => pidOf.get(pid) ?? null });
    const events = F('output-6.18.txt').split('\n').flatMap((l) => { const [, kind, , , , , , , , pid] = l.split('\t'); if (kind === 'SK') pidOf.set(Number(pid), `pod-of-${pid}`); return p.line(l); });
    const sk = events.filter((e) => e.kind === 'listen' || e.kind === 'listener-closed');
    expect(sk.length).toBeGreaterThan(0);
    for (const e of sk) expect((e.attrs as { pod_uid: string | null }).pod_uid).toBe(`pod-of-${(e.attrs as { pid: number }).pid}`);
    // the scan wins when it knows the cgroup
    const q = new EbpfParser({ offsetNs: OFFSET, resetReasons: reasons, podOfCgroup: () => 'scanned', podOfPid: () => 'from-proc' });
    const first = F('output-6.18.txt').split('\n').flatMap((l) => q.line(l)).find((e) => e.kind === 'listen');
    expect((first!.attrs as { pod_uid: string }).pod_uid).toBe('scanned');
  });

  it('malformed lines are skipped and counted, chatter ignored, lost events counted', () => {
    const text = [
      'Attaching 6 probes...', 'RT\tBEGIN\tnope', 'RT\tSK\t1\t2', 'RT\tRST\t5\t0\t1\t\\x02\\x00\tzz\t1\t0\tx',
      'RT\tWHAT\t1', 'random', 'RT\tEXIT\t10\t5\t0\tsh', 'Lost 3 events',
    ].join('\n');
    const { p, events } = run(text);
    expect(events.map((e) => e.kind)).toEqual(['process-exit']);
    expect(p.malformed).toBe(5 + 3);
  });

  it('sockaddr bytes', () => {
    expect(decodeSockaddr(unescapeHex('\\x02\\x00\\x1f\\x90\\x0a\\x00\\x00\\x07')!)).toEqual({ addr: '10.0.0.7', port: 8080 });
    expect(unescapeHex('\\x0g')).toBeNull();
    expect(decodeSockaddr([1, 0, 0, 0, 0, 0, 0, 0])).toBeNull();
  });

  it('clock offset is realtime minus monotonic', () => {
    const o = measureMonotonicToRealtime(5);
    const direct = Date.now() * 1e6 - Number(process.hrtime.bigint());
    expect(Math.abs(o.offsetNs - direct)).toBeLessThan(5e6);
    expect(o.uncertaintyNs).toBeGreaterThan(0);
    // the tightest of 5 samples is a pair of adjacent clock reads: far below a millisecond unless the measurement is broken
    expect(o.uncertaintyNs).toBeLessThan(5e6);
  });

  it('a step of the realtime clock while recording is followed; a late coarse read is not a step', () => {
    // the true offset, and what a coarse read sees (up to 1 ms under it, more when the read is delayed)
    let truth = 5_000_000_000, lag = 300_000;
    /** measurements to come that a loaded node spoils (ns under the offset), then exact ones */
    const spoiled: number[] = [];
    const measure = (): ClockOffset => ({ offsetNs: truth - 2000 - (spoiled.shift() ?? 0), uncertaintyNs: 3000, samples: 20 });
    const seen: number[] = [];
    let measured = 0;
    const w = new OffsetWatch(measure(), (next, delta) => seen.push(delta, next.offsetNs), () => { measured++; return measure(); }, () => truth - lag);
    expect(w.check()).toBe(false);
    expect(measured).toBe(0);
    // NTP or a guest agent sets the clock 7.5 ms ahead: followed, with the precise offset
    truth += 7_500_000;
    expect(w.check()).toBe(true);
    expect(seen).toEqual([7_500_000, truth - 2000]);
    expect(w.check()).toBe(false);
    expect(measured).toBe(2);
    // a coarse read delayed 4 ms (a loaded node) looks like a step back: the precise measurement says no
    lag = 4_300_000;
    expect(w.check()).toBe(false);
    expect(measured).toBe(3);
    // and a precise measurement spoiled by 3 ms as well: the second one does not confirm it
    spoiled.push(3_000_000);
    expect(w.check()).toBe(false);
    expect(measured).toBe(5);
    expect(seen).toHaveLength(2);
    // a real step back of 20 ms
    lag = 300_000; truth -= 20_000_000;
    expect(w.check()).toBe(true);
    expect(seen.slice(2)).toEqual([-20_000_000, truth - 2000]);
  });
});

describe('pod cgroups over a recording (real node: the second pod\'s listener close had no pod)', () => {
  it('a cgroup removed before its last event is parsed keeps its pod: rescans add, never forget', () => {
    // real two-node run: app pid 13216 in cgroup 115944 (pod 7b12dcce-…); runc removed the cgroup as the app
    // exited, a rescan (a pod changed) ran 8 ms before bpftrace's line of the listener close was parsed
    const UID = '7b12dcce-f921-4757-8925-2ef0e9012e49';
    const scans = [new Map([[115925, 'other-pod'], [115944, UID]]), new Map([[115925, 'other-pod'], [116001, 'new-pod']])];
    const idx = new PodCgroupIndex(() => scans.shift()!);
    idx.rescan();
    idx.rescan();
    const p = new EbpfParser({ offsetNs: OFFSET, podOfCgroup: (id) => idx.get(id), podOfPid: () => null });
    const [closed] = p.line('RT\tSK\t870918557999\t10\t7\t8080\t2\t0.0.0.0\t::ffff:0.0.0.0\t13216\t115944\t4026532177\tapp');
    expect(closed).toMatchObject({ kind: 'listener-closed', attrs: { pid: 13216, cgroup_id: 115944, pod_uid: UID } });
    expect(idx.get(116001)).toBe('new-pod');
    expect(idx.get(1)).toBeNull();
  });
});

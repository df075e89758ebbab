// Issue 14: what the analysis says about strace's coverage of a pod (lazy mode attaches late) and the
// pod attribution of ebpf signals by the target's pod UID. Pure: facts in, evidence lines out.
import { describe, expect, it } from 'vitest';
import { emptyFacts, type AttachEv, type Facts } from '../analyzer/model/facts.js';
import { straceCoverage } from '../analyzer/model/pods.js';
import { Identity } from '../analyzer/model/identity.js';

const T = 1_776_000_000_000_000_000;
const ms = (x: number) => T + x * 1e6;
const facts = (mode: string | null): Facts => ({ ...emptyFacts(), straceMode: mode ? { requested: 'lazy', mode, reason: null } : null });
const att = (o: Partial<AttachEv>): AttachEv => ({ ts: ms(10), source: 'strace', pid: 42, netns: null, podUid: 'u1', mode: 'lazy', reason: 'signal', triggerNs: ms(0), confirmed: true, error: null, ...o });
const seen = (...l: Array<[number, string]>) => l.map(([t, source]) => ({ ts: ms(t), source }));

describe('straceCoverage', () => {
  it('says nothing for bundles from before strace modes (attached from the start)', () => {
    expect(straceCoverage(facts(null), [att({ mode: null, reason: null })], [{ what: 'SIGTERM', seen: seen([0, 'ebpf']) }])).toEqual([]);
  });

  it('lazy, attached after the SIGTERM: what came from ebpf only before it, what only strace saw, nothing for facts both saw', () => {
    const out = straceCoverage(facts('lazy'), [att({ ts: ms(12) }), att({ ts: ms(30), pid: 43 })], [
      { what: 'SIGTERM', seen: seen([0, 'ebpf']) },
      { what: 'listener close', seen: seen([5, 'ebpf']) },
      { what: 'exit', seen: seen([200, 'strace']) },
    ]);
    expect(out).toEqual([
      `strace attached to pid 42 at ${new Date(ms(12) / 1e6).toISOString().replace('Z', '000Z')} (mode lazy, when ebpf saw a SIGTERM generated to it)`,
      expect.stringMatching(/^SIGTERM at \S+ \[ebpf\] only: before strace attached \(12(\.0+)? ms later\), strace could not see it$/),
      expect.stringMatching(/^listener close at \S+ \[ebpf\] only: before strace attached \(7(\.0+)? ms later\), strace could not see it$/),
      expect.stringMatching(/^exit at \S+ seen only by strace, attached late, at \S+; ebpf has no record of it$/),
    ]);
    // both saw it: nothing to say
    expect(straceCoverage(facts('lazy'), [att({})], [{ what: 'exit', seen: seen([50, 'ebpf'], [50.1, 'strace']) }])).toHaveLength(1);
  });

  it('a fact nobody saw, strace never attached, strace could not attach', () => {
    expect(straceCoverage(facts('lazy'), [att({})], [{ what: 'exit', seen: [] }])[1]).toBe('exit: recorded by no tracer (it did not happen while recording, or ebpf lost it; strace was attached only from the time above)');
    expect(straceCoverage(facts('lazy'), [], [{ what: 'SIGTERM', seen: seen([0, 'ebpf']) }, { what: 'exit', seen: [] }]))
      .toEqual(["strace (mode lazy) never attached to this pod's processes: SIGTERM from ebpf only"]);
    expect(straceCoverage(facts('off'), [], [{ what: 'SIGTERM', seen: seen([0, 'ebpf']) }])).toEqual([]);
    expect(straceCoverage(facts('lazy'), [att({ confirmed: false, error: 'No such process', reason: 'pod-terminating' })], [{ what: 'SIGTERM', seen: seen([0, 'ebpf']) }]))
      .toEqual([expect.stringMatching(/^strace could not attach to pid 42 \(mode lazy, when the kube source saw its deletionTimestamp\): asked at \S+, strace said: No such process; SIGTERM from ebpf only$/)]);
  });

  it('--strace all: an attach from the start says so and a fact only strace saw is not "late"', () => {
    const out = straceCoverage(facts('all'), [att({ reason: 'all', mode: 'all', ts: ms(-5000) })], [{ what: 'listener close', seen: seen([5, 'strace']) }]);
    expect(out[0]).toMatch(/\(mode all, from the start \(--strace all\)\)$/);
    expect(out[1]).toMatch(/seen only by strace, attached from the start; ebpf has no record of it$/);
  });
});

describe('ebpf signals carry the target pod', () => {
  it('a pid seen only in ebpf events is tied to the pod named by pod_uid', () => {
    const id = new Identity();
    id.addPodObject(T, 'ADDED', JSON.stringify({ metadata: { uid: 'u1', name: 'web-1', namespace: 'default' }, status: { podIP: '10.0.0.9' } }));
    id.linkPid(4242, null, null, T, 'u1');
    expect(id.podOfPid(4242)?.name).toBe('web-1');
    id.linkPid(4343, null, null, T, 'not-a-watched-pod');
    expect(id.podOfPid(4343)).toBeNull();
  });
});

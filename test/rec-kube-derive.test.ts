import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  deriveKubeEvents, emptyKubeState, endRelist, parseWatchLines, relistKey, type KubeState,
} from '../recorder/sources/kube/derive.js';
import { labelSelectorToString, matchesSelector, parseSelector } from '../recorder/sources/kube/selector.js';
import type { RtEvent } from '../schemas/events.js';

const fixture = readFileSync(new URL('../fixtures/kube/rollout-watch.jsonl', import.meta.url), 'utf8');

function run(text: string) {
  const { events, bad } = parseWatchLines(text);
  let state: KubeState = emptyKubeState();
  const out: RtEvent[] = [];
  events.forEach((w, i) => {
    const r = deriveKubeEvents(state, w, 1_000 + i);
    state = r.state;
    out.push(...r.events);
  });
  return { out, bad, state, n: events.length };
}

describe('kube derive on a rolling-restart watch stream', () => {
  const { out, bad, state, n } = run(fixture);

  it('skips and counts malformed lines', () => {
    expect(bad).toBe(2);
    expect(n).toBe(13);
  });

  it('derives pod lifecycle events in order', () => {
    const pods = out.filter((e) => e.kind.startsWith('pod-')).map((e) => `${e.kind} ${e.subject} ${e.kind === 'pod-ready' ? (e.attrs as { ready: boolean }).ready : ''}`.trim());
    expect(pods).toEqual([
      'pod-created default/web-6d4cf56db6-abcde',
      'pod-ready default/web-6d4cf56db6-abcde true',
      'pod-created default/web-7f9b8c5d4-fghij',
      'pod-ready default/web-7f9b8c5d4-fghij true',
      'pod-terminating default/web-6d4cf56db6-abcde',
      'pod-ready default/web-6d4cf56db6-abcde false',
      'pod-deleted default/web-6d4cf56db6-abcde',
    ]);
    const term = out.find((e) => e.kind === 'pod-terminating')!;
    expect(term.attrs).toMatchObject({ deletionTimestamp: '2026-11-21T20:00:10Z', gracePeriodSeconds: 30, ip: '10.244.0.5', uid: 'pod-uid-a', node: 'node-1' });
    expect(term.ts_ns).toBe(1_000 + 7);
  });

  it('derives per-endpoint slice diffs with conditions and pod refs', () => {
    const eps = out.filter((e) => e.kind === 'endpoint-changed').map((e) => {
      const a = e.attrs as { ip: string; change: string; ready: boolean; serving: boolean; terminating: boolean; pod: string; service: string; ports: number[] };
      return `${a.change} ${a.ip} r=${a.ready} s=${a.serving} t=${a.terminating} ${a.pod} ${a.service} ${a.ports.join(',')}`;
    });
    expect(eps).toEqual([
      'added 10.244.0.5 r=true s=true t=false web-6d4cf56db6-abcde web 80',
      'added 10.244.0.6 r=false s=false t=false web-7f9b8c5d4-fghij web 80',
      'modified 10.244.0.6 r=true s=true t=false web-7f9b8c5d4-fghij web 80',
      'modified 10.244.0.5 r=false s=true t=true web-6d4cf56db6-abcde web 80',
      'removed 10.244.0.5 r=false s=true t=true web-6d4cf56db6-abcde web 80',
    ]);
  });

  it('ends with only the new pod and its endpoint', () => {
    expect(Object.keys(state.pods)).toEqual(['pod-uid-b']);
    expect(state.pods['pod-uid-b']).toMatchObject({ ip: '10.244.0.6', ready: true, terminating: false });
    expect(Object.keys(state.slices['default/web-x7k2p']!.endpoints)).toEqual(['10.244.0.6']);
  });

  it('never mutates the input state', () => {
    const { events } = parseWatchLines(fixture);
    const s0 = emptyKubeState();
    const r1 = deriveKubeEvents(s0, events[0]!, 1);
    expect(s0.pods).toEqual({});
    const snapshot = JSON.stringify(r1.state);
    deriveKubeEvents(r1.state, events[events.length - 1]!, 2);
    expect(JSON.stringify(r1.state)).toBe(snapshot);
  });
});

describe('LIST baseline and RELIST', () => {
  const { events } = parseWatchLines(fixture);
  const podA = events[0]!.object;
  const slice = events[1]!.object;

  it('LIST sets a baseline without lifecycle events, except an already-terminating pod', () => {
    let s = emptyKubeState();
    let r = deriveKubeEvents(s, { type: 'LIST', object: podA, kind: 'Pod' }, 5);
    expect(r.events).toEqual([]);
    s = r.state;
    r = deriveKubeEvents(s, { type: 'LIST', object: slice, kind: 'EndpointSlice' }, 5);
    expect(r.events).toEqual([]);
    const terminating = events[7]!.object;
    r = deriveKubeEvents(emptyKubeState(), { type: 'LIST', object: terminating, kind: 'Pod' }, 6);
    expect(r.events.map((e) => e.kind)).toEqual(['pod-terminating']);
  });

  it('a relist closes objects that vanished while the watch was down', () => {
    let s = deriveKubeEvents(emptyKubeState(), { type: 'LIST', object: podA }, 1).state;
    s = deriveKubeEvents(s, { type: 'LIST', object: slice }, 1).state;
    const podB = events[3]!.object;
    const rPod = deriveKubeEvents(s, { type: 'RELIST', object: podB }, 9);
    expect(rPod.events.map((e) => e.kind)).toEqual(['pod-created']);
    s = rPod.state;
    const endPods = endRelist(s, 'Pod', new Set([relistKey('Pod', podB)]), 10);
    expect(endPods.events.map((e) => `${e.kind} ${e.subject}`)).toEqual(['pod-deleted default/web-6d4cf56db6-abcde']);
    const endSlices = endRelist(endPods.state, 'EndpointSlice', new Set(), 10);
    expect(endSlices.events.map((e) => `${(e.attrs as { change: string }).change} ${(e.attrs as { ip: string }).ip}`)).toEqual(['removed 10.244.0.5']);
    expect(Object.keys(endSlices.state.slices)).toEqual([]);
  });

  it('parses ts given as ISO with nanoseconds or epoch ns', () => {
    const p = parseWatchLines([
      JSON.stringify({ type: 'ADDED', object: podA, ts: '2026-11-21T20:00:00.123456789Z' }),
      JSON.stringify({ type: 'ADDED', object: podA, ts: 1_700_000_000_000_000_000 }),
      JSON.stringify({ type: 'ADDED' }),
    ].join('\n'));
    expect(p.bad).toBe(1);
    expect(p.events[0]!.ts).toBe(Date.parse('2026-11-21T20:00:00Z') * 1e6 + 123456789);
    expect(p.events[1]!.ts).toBe(1_700_000_000_000_000_000);
  });
});

describe('label selectors', () => {
  it('parses and evaluates every operator', () => {
    const r = parseSelector('app=web,tier!=db,env in (prod, staging),!legacy,track');
    expect(matchesSelector(r, { app: 'web', env: 'prod', track: 'x' })).toBe(true);
    expect(matchesSelector(r, { app: 'web', env: 'dev', track: 'x' })).toBe(false);
    expect(matchesSelector(r, { app: 'web', env: 'prod', track: 'x', legacy: '1' })).toBe(false);
    expect(matchesSelector(r, { app: 'web', env: 'prod', track: 'x', tier: 'db' })).toBe(false);
    expect(() => parseSelector('app=(web')).toThrow(/label selector/);
  });
  it('turns a Deployment selector into a query string', () => {
    expect(labelSelectorToString({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'env', operator: 'In', values: ['a', 'b'] }, { key: 'x', operator: 'DoesNotExist' }] }))
      .toBe('app=web,env in (a,b),!x');
  });
});

describe('kube derive on the lab API server watch stream (fixtures/watch)', () => {
  const text = readFileSync(new URL('../fixtures/watch/rollout-watch.jsonl', import.meta.url), 'utf8');
  const { events: ws, bad } = parseWatchLines(text);
  let state: KubeState = emptyKubeState();
  const out: RtEvent[] = [];
  for (const w of ws) {
    const r = deriveKubeEvents(state, w, w.ts ?? 0);
    state = r.state;
    out.push(...r.events);
  }
  const bySubject = (subject: string) => out.filter((e) => e.subject === subject).map((e) => {
    if (e.kind === 'endpoint-changed') return `ep-${(e.attrs as { change: string }).change}${(e.attrs as { terminating: boolean }).terminating ? '-terminating' : ''}`;
    if (e.kind === 'pod-ready') return `ready-${(e.attrs as { ready: boolean }).ready}`;
    return e.kind;
  });

  it('reads every line, stamped with the recorded receive time', () => {
    expect(bad).toBe(0);
    expect(ws.length).toBeGreaterThan(10);
    expect(ws.every((w) => typeof w.ts === 'number' && w.ts > 1.6e18)).toBe(true);
  });

  it('every replaced pod goes created -> ready -> terminating -> deleted, its endpoint terminating then removed', () => {
    const deleted = out.filter((e) => e.kind === 'pod-deleted').map((e) => e.subject!);
    expect(deleted.length).toBeGreaterThan(0);
    for (const s of deleted) {
      const seq = bySubject(s);
      const podSeq = seq.filter((x) => !x.startsWith('ep-'));
      expect(podSeq.indexOf('pod-terminating')).toBeGreaterThan(podSeq.indexOf('ready-true'));
      expect(podSeq[podSeq.length - 1]).toBe('pod-deleted');
      const epSeq = seq.filter((x) => x.startsWith('ep-'));
      expect(epSeq[epSeq.length - 1]).toBe('ep-removed-terminating');
      expect(epSeq).toContain('ep-modified-terminating');
    }
    // timestamps come from the file, in order
    const ts = out.map((e) => e.ts_ns);
    expect([...ts].sort((a, b) => a - b)).toEqual(ts);
  });

  it('ends with only new pods, all ready, and one endpoint each', () => {
    const pods = Object.values(state.pods);
    expect(pods.length).toBeGreaterThan(0);
    expect(pods.every((p) => p.ready && !p.terminating && p.ip)).toBe(true);
    const eps = Object.values(state.slices).flatMap((s) => Object.values(s.endpoints));
    expect(eps.map((e) => e.ip).sort()).toEqual(pods.map((p) => p.ip).sort());
  });
});

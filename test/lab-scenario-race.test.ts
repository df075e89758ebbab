import { describe, expect, it } from 'vitest';
import { leftovers, runScenario } from './lab-scenario-helpers.js';

// The lab alone (its own rollout and traffic, no recorder): the truth must show the race.
describe('lab scenario race', () => {
  it('refuses >= 1 connection on the old pod, listener closed before the rule sync, and leaves nothing behind', async () => {
    const { code, prefix, truth } = await runScenario('race');
    expect(code).toBe(0);
    const t = truth!;
    expect(t.pods).toHaveLength(2);
    const oldIps = new Set(t.pods.map((p) => p.ip));
    const refused = t.failures.filter((f) => f.kind === 'refused');
    expect(refused.length).toBeGreaterThanOrEqual(1);
    for (const f of refused) {
      expect(oldIps.has(f.backendIp!)).toBe(true);
      expect(t.pods.find((p) => p.ip === f.backendIp)!.name).toBe(f.backendPod!.split('/')[1]);
      expect(f.service).toBe('10.96.0.10:80');
    }
    for (const p of t.pods) {
      expect(p.sigtermNs).not.toBeNull();
      expect(p.listenerClosedNs! - p.sigtermNs!).toBeGreaterThanOrEqual(0);
      expect(p.ruleRemoved).not.toBeNull();
      // the race: the listener closed before the node stopped routing to it
      expect(p.listenerClosedNs!).toBeLessThan(p.ruleRemoved!.syncEndNs);
      expect(p.killed).toBe(false);
    }
    expect(leftovers(prefix, t)).toEqual([]);
  }, 60_000);
});

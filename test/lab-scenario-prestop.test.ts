import { describe, expect, it } from 'vitest';
import { leftovers, runScenario } from './lab-scenario-helpers.js';

describe('lab scenario prestop', () => {
  it('has zero failed connections: the rules drop the pod during the preStop sleep', async () => {
    const { code, prefix, truth } = await runScenario('prestop');
    expect(code).toBe(0);
    const t = truth!;
    expect(t.pods).toHaveLength(2);
    expect(t.failures).toEqual([]);
    for (const p of t.pods) {
      expect(p.preStopStartNs).not.toBeNull();
      expect(p.ruleRemoved!.syncEndNs).toBeLessThan(p.sigtermNs!);
    }
    // the lab's traffic really ran through the VIP
    expect(t.conntrack.events).toBeGreaterThan(50);
    expect(leftovers(prefix, t)).toEqual([]);
  }, 60_000);
});

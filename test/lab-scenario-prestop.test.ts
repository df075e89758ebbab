import { describe, expect, it } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { labSession, newPrefix } from '../lab/cli.js';
import type { Truth } from '../lab/truth.js';
import { leftovers } from './lab-scenario-helpers.js';

describe('lab scenario prestop', () => {
  it('has zero failed connections: the rules drop the pod during the preStop sleep', async () => {
    const prefix = newPrefix();
    const truthPath = `/tmp/${prefix}-truth.json`;
    try {
      const { code } = await labSession({ scenario: 'prestop', out: '', truth: truthPath, mode: 'run', noRecorder: true, prefix, onLine: () => undefined });
      expect(code).toBe(0);
      const t = JSON.parse(readFileSync(truthPath, 'utf8')) as Truth;
      expect(t.pods).toHaveLength(2);
      expect(t.failures).toEqual([]);
      for (const p of t.pods) {
        expect(p.preStopStartNs).not.toBeNull();
        expect(p.ruleRemoved!.syncEndNs).toBeLessThan(p.sigtermNs!);
      }
      // the lab's traffic really ran through the VIP
      expect(t.conntrack.events).toBeGreaterThan(50);
      expect(leftovers(prefix, t)).toEqual([]);
    } finally {
      rmSync(truthPath, { force: true });
    }
  }, 60_000);
});

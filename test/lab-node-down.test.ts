import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanupLab } from '../lab/state.js';
import { cgroup2Root } from '../lab/node/cgroup.js';

const procsWith = (s: string) => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((pid) => {
  try { return readFileSync(join('/proc', pid, 'cmdline'), 'utf8').includes(s); } catch { return false; }
});
const podSlices = () => {
  const d = join(cgroup2Root(), 'kubepods.slice', 'kubepods-besteffort.slice');
  return existsSync(d) ? readdirSync(d).filter((x) => x.startsWith('kubepods-besteffort-pod')) : [];
};

describe('lab down after SIGKILL', () => {
  it('removes the namespaces, cgroups and processes a SIGKILLed `lab up` left behind', async () => {
    const before = new Set(podSlices());
    const up = spawn(process.execPath, ['bin/rolltrace.mjs', 'lab', 'up', '--scenario', 'race'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let prefix = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`lab up not ready: ${out}`)), 45000);
        up.stdout!.on('data', (d: Buffer) => { out += d; if (out.includes('record with')) { clearTimeout(t); resolve(); } });
        up.on('exit', () => { clearTimeout(t); reject(new Error(`lab up exited: ${out}`)); });
      });
      prefix = /node netns: (rtl[0-9a-f]{6})-node/.exec(out)![1]!;
      const mine = [...podSlices()].filter((x) => !before.has(x));
      expect(mine.length).toBe(2);
      up.kill('SIGKILL');
      await new Promise((r) => up.once('exit', r));
      // the control process in the node netns and the backends survive the SIGKILL of the CLI
      expect(procsWith(prefix).length).toBeGreaterThan(0);
      const r = cleanupLab(prefix);
      expect(r.netns).toContain(`${prefix}-node`);
      const ns = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
      expect(ns).not.toContain(prefix);
      expect(procsWith(prefix)).toEqual([]);
      const left = podSlices().filter((x) => mine.includes(x));
      expect(left).toEqual([]);
      expect(existsSync(`/run/rolltrace-lab/${prefix}`)).toBe(false);
    } finally {
      try { up.kill('SIGKILL'); } catch { /* gone */ }
      if (prefix) cleanupLab(prefix);
    }
  }, 60_000);
});

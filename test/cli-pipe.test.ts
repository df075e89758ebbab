/**
 * A reader that has gone away (`rolltrace analyze B | head -c 10` once head has exited): the command
 * stops quietly with its exit code, no "Unhandled 'error' event" stack trace (seen before).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { BIN, ROOT } from './helpers/cli.js';

it('analyze into a closed pipe: its exit code, nothing on stderr', async () => {
  const bundle = join(ROOT, 'fixtures', 'analysis', 'lab-grace-too-short.rtb.gz');
  const p = spawn(BIN, ['analyze', bundle, '--format', 'json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout.destroy(); // the reader is gone before the first write
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => { stderr += d; });
  const code = await new Promise<number | null>((res) => p.on('close', (c) => res(c)));
  expect(stderr).toBe('');
  expect(code).toBe(1); // this bundle has failures: the verdict's exit code survives
}, 60_000);

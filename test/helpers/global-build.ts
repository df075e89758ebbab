/**
 * vitest global setup: the tests that spawn bin/rolltrace.mjs test the compiled code users run, so
 * dist/ must match the sources also when a single file is run (`npx vitest run test/x.test.ts` skips
 * `pretest`). Rebuilds only when a source is newer than the last build.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export default function setup(): void {
  const root = join(__dirname, '..', '..');
  const r = spawnSync(process.execPath, [join(root, 'scripts/build.mjs'), '--if-stale'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error('npm run build failed: the CLI tests need dist/ (see the tsc errors above)');
}

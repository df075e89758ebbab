#!/usr/bin/env node
// rolltrace build: TypeScript -> dist/ with tsc (tsconfig.build.json), plus the data files the code reads
// at run time by path (SQL migrations, the JSON schema, .mjs workers and lab backends), at the same place
// under dist/ so `new URL('./x', import.meta.url)` finds them from the compiled code too.
//   node scripts/build.mjs             clean build (prepare, prepack, npm run build)
//   node scripts/build.mjs --if-stale  build only when a source file is newer than the last build
//                                      (pretest, predemo and the test suite's global setup)
// Node built-ins only.
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const STAMP = join(dist, '.build-stamp');
/** the directories tsconfig.build.json compiles; everything else in them that is not TypeScript is data */
export const SOURCE_DIRS = ['schemas', 'recorder', 'analyzer', 'lab', 'cli'];
const log = (s) => process.stderr.write(`[build] ${s}\n`);

function* walk(dir) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.isFile()) yield p;
  }
}

const sources = () => SOURCE_DIRS.flatMap((d) => [...walk(join(root, d))]);
const isTs = (p) => p.endsWith('.ts') && !p.endsWith('.d.ts');

/** newest mtime of everything the build reads (sources, data files, build config, package.json) */
function newestInput() {
  const extra = ['tsconfig.json', 'tsconfig.build.json', 'package.json', 'scripts/build.mjs'].map((f) => join(root, f));
  let newest = 0;
  for (const p of [...sources(), ...extra]) newest = Math.max(newest, statSync(p).mtimeMs);
  return newest;
}

export function isStale() {
  if (!existsSync(STAMP)) return true;
  return newestInput() > statSync(STAMP).mtimeMs;
}

export function build({ clean = true } = {}) {
  const t0 = Date.now();
  if (clean) rmSync(dist, { recursive: true, force: true });
  const tsc = createRequire(join(root, 'package.json')).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) {
    log('tsc failed: fix the type errors above (npx tsc --noEmit)');
    rmSync(STAMP, { force: true });
    return false;
  }
  // a source removed since the last incremental build must not live on in dist/
  for (const p of existsSync(dist) ? [...walk(dist)] : []) {
    const rel = relative(dist, p);
    if (rel.startsWith('.')) continue;
    const src = join(root, rel.endsWith('.js') && !existsSync(join(root, rel)) ? rel.replace(/\.js$/, '.ts') : rel);
    if (!existsSync(src)) rmSync(p);
  }
  let copied = 0;
  for (const p of sources()) {
    if (isTs(p)) continue;
    const to = join(dist, relative(root, p));
    mkdirSync(dirname(to), { recursive: true });
    copyFileSync(p, to);
    copied++;
  }
  writeFileSync(STAMP, `${new Date().toISOString()}\n`);
  log(`dist/ built in ${((Date.now() - t0) / 1000).toFixed(1)} s (${copied} data files copied)`);
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const ifStale = process.argv.includes('--if-stale');
  if (ifStale && !isStale()) process.exit(0);
  // an incremental tsc (its build info lives in dist/, so removing dist/ forces a full build)
  process.exit(build({ clean: !ifStale }) ? 0 : 1);
}

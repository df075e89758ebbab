#!/usr/bin/env node
// `npm run krew`: the krew archive of `kubectl rolltrace` and its manifest, offline.
//   out/krew/kubectl-rolltrace-VERSION-linux-amd64.tar.gz   kubectl-rolltrace/ = the `npm pack` contents (bin/,
//       dist/, deploy/, docs/) + node_modules with the production dependencies of this checkout (better-sqlite3
//       compiled for this machine's Node 20; not `cap`: the plugin never captures). Runs with the Node on PATH.
//   out/krew/rolltrace.yaml   deploy/krew/rolltrace.yaml with the archive's sha256 and a file:// uri
// Install: kubectl krew install --manifest=out/krew/rolltrace.yaml --archive=out/krew/kubectl-rolltrace-*.tar.gz
// Node built-ins, npm and tar only.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const log = (s) => process.stderr.write(`[krew] ${s}\n`);

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.slice(0, 4).join(' ')} failed (exit ${r.status ?? r.signal})`);
  return r.stdout ?? '';
}

/** the top-level package directories of the production dependency tree (npm ls --omit=dev) */
export function productionPackages(parseable, base) {
  const tops = new Set();
  for (const p of parseable.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const rel = relative(base, p).split(sep);
    if (rel[0] !== 'node_modules') continue;
    tops.add(rel[1].startsWith('@') ? join(rel[1], rel[2]) : rel[1]);
  }
  return [...tops].sort();
}

export function buildKrew({ outDir = join(root, 'out', 'krew') } = {}) {
  sh(process.execPath, [join(root, 'scripts/build.mjs'), '--if-stale'], { stdio: 'inherit' });
  const stage = mkdtempSync(join(tmpdir(), 'rolltrace-krew-'));
  try {
    const info = JSON.parse((o => o.slice(o.indexOf('[')))(sh('npm', ['pack', '--ignore-scripts', '--pack-destination', stage, '--json', '--silent'], { cwd: root })))[0];
    const dir = join(stage, 'kubectl-rolltrace');
    mkdirSync(dir);
    sh('tar', ['-xzf', join(stage, info.filename), '-C', dir, '--strip-components=1', '--no-same-owner']);
    const parseable = spawnSync('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 }).stdout ?? '';
    const deps = productionPackages(parseable, root).filter((d) => d !== 'cap');
    for (const d of deps) cpSync(join(root, 'node_modules', d), join(dir, 'node_modules', d), { recursive: true, dereference: true });
    // what runs of better-sqlite3: its .node, not the compiler's intermediates and the SQLite sources
    const bs = join(dir, 'node_modules', 'better-sqlite3');
    rmSync(join(bs, 'deps'), { recursive: true, force: true });
    rmSync(join(bs, 'src'), { recursive: true, force: true });
    const rel = join(bs, 'build', 'Release');
    if (existsSync(rel)) for (const e of readdirSync(rel)) if (!e.endsWith('.node') || e === 'test_extension.node') rmSync(join(rel, e), { recursive: true, force: true });
    for (const e of existsSync(join(bs, 'build')) ? readdirSync(join(bs, 'build')) : []) if (e !== 'Release') rmSync(join(bs, 'build', e), { recursive: true, force: true });
    mkdirSync(outDir, { recursive: true });
    const archive = join(outDir, `kubectl-rolltrace-${pkg.version}-linux-amd64.tar.gz`);
    sh('tar', ['-C', stage, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-czf', archive, 'kubectl-rolltrace']);
    const sha256 = createHash('sha256').update(readFileSync(archive)).digest('hex');
    const manifest = readFileSync(join(root, 'deploy', 'krew', 'rolltrace.yaml'), 'utf8')
      .replace(/^(\s*uri:).*$/m, `$1 file://${resolve(archive)}`)
      .replace(/^(\s*sha256:).*$/m, `$1 "${sha256}"`)
      .replace(/^(\s*version:).*$/m, `$1 v${pkg.version}`);
    writeFileSync(join(outDir, 'rolltrace.yaml'), manifest);
    log(`${archive} (${deps.length} dependencies, sha256 ${sha256})`);
    process.stdout.write(`${archive}\n${join(outDir, 'rolltrace.yaml')}\n`);
    return { archive, manifest: join(outDir, 'rolltrace.yaml'), sha256 };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === resolve(process.argv[1])) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--out-dir');
  if (args.some((a, j) => a !== '--out-dir' && j !== i + 1) || (i >= 0 && !args[i + 1])) { log('usage: node scripts/krew.mjs [--out-dir DIR]'); process.exit(2); }
  try { buildKrew(i >= 0 ? { outDir: args[i + 1] } : {}); } catch (e) { log(e.message); process.exit(1); }
}

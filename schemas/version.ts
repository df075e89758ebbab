/**
 * rolltrace's own version, from the package.json of the installed package. The code runs from the
 * sources (tsx, tests) or compiled from dist/, so the package root is found by walking up from here,
 * not by a fixed '../package.json'.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The directory holding rolltrace's package.json (the repository, or the installed package). */
export function packageRoot(): string | null {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const p = join(dir, 'package.json');
    if (existsSync(p)) {
      try { if (JSON.parse(readFileSync(p, 'utf8')).name === 'rolltrace') return dir; } catch { /* not ours */ }
    }
    if (dirname(dir) === dir) return null;
  }
}

let cached: string | undefined;
export function rolltraceVersion(): string {
  if (cached !== undefined) return cached;
  const root = packageRoot();
  try {
    cached = root ? String(JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version) : '0.0.0';
  } catch {
    cached = '0.0.0';
  }
  return cached;
}

/**
 * The rolltrace node image (`npm run image`) on the real node: `lab up --real` imports it into the node's
 * containerd (`ctr -n k8s.io images import`, as lab/real/images.ts does for the app) when it has been
 * built, so deploy/ and `kubectl rolltrace` run on the lab as on a kind/k3d/containerd node. Where the
 * archive is looked for, first found wins: $ROLLTRACE_IMAGE_ARCHIVE, this checkout's out/rolltrace-image.tar
 * (`npm run image`), the copy scripts/image.mjs keeps in its cache (/var/cache/rolltrace/image).
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../sys.js';
import { packageRoot, rolltraceVersion } from '../../schemas/version.js';
import { paths, realLayout } from './config.js';
import { containerdBin } from './runtime.js';

/** The name containerd knows the image by (scripts/image.mjs IMAGE_NAME). */
export const rolltraceImageName = () => `docker.io/library/rolltrace:${rolltraceVersion()}`;
/** How manifests refer to it (scripts/image.mjs IMAGE_REF). */
export const rolltraceImageRef = () => `rolltrace:${rolltraceVersion()}`;

export function rolltraceImageCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  const root = packageRoot();
  const cache = env.ROLLTRACE_IMAGE_CACHE ?? '/var/cache/rolltrace/image';
  return [env.ROLLTRACE_IMAGE_ARCHIVE, root ? join(root, 'out', 'rolltrace-image.tar') : undefined, join(cache, 'rolltrace-image.tar')]
    .filter((p): p is string => !!p);
}

export const findRolltraceImage = (env: NodeJS.ProcessEnv = process.env): string | null =>
  rolltraceImageCandidates(env).find((p) => existsSync(p)) ?? null;

export interface ImageImport { imported: boolean; archive: string | null; name: string; line: string }

/** Import the archive into the lab's containerd (k8s.io namespace, unpacked) if there is one; say what happened. */
export function importRolltraceImage(prefix: string): ImageImport {
  const name = rolltraceImageName();
  const archive = findRolltraceImage();
  if (!archive) {
    return { imported: false, archive: null, name, line: `rolltrace image: not built (\`npm run image\` builds out/rolltrace-image.tar; the next \`lab up --real\` imports it)` };
  }
  const sock = paths(realLayout(prefix)).containerdSock;
  run(containerdBin('ctr'), ['--address', sock, '-n', 'k8s.io', 'images', 'import', '--no-unpack=false', archive]);
  const listed = run(containerdBin('ctr'), ['--address', sock, '-n', 'k8s.io', 'images', 'ls', '-q']).stdout.split('\n');
  if (!listed.includes(name)) throw new Error(`real node: ${archive} imported but containerd does not list ${name}`);
  const built = statSync(archive).mtime.toISOString().replace(/\.\d+Z$/, 'Z');
  return { imported: true, archive, name, line: `rolltrace image: ${name} imported from ${archive} (built ${built})` };
}

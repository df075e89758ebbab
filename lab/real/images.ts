/**
 * The real node's images, without a registry: OCI image-layout archives assembled here and imported
 * into the lab's containerd with `ctr -n k8s.io images import`. One layer, a busybox-static rootfs
 * (Debian's busybox-static: /bin/sh, sleep, ... for preStop exec hooks) plus /app, the lab's Go program
 * (lab/real/app): the app image runs `/app` with the scenario's arguments, the pause image `/app pause`.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../sys.js';
import { APP_IMAGE, PAUSE_IMAGE } from './config.js';

export const BUSYBOX = '/bin/busybox';
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export interface OciImage { name: string; entrypoint: string[]; env?: string[] }

/** The manifest, config and index of one image over one uncompressed layer (pure, for tests). */
export function ociDocuments(img: OciImage, layer: { digest: string; size: number }) {
  const config = JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Entrypoint: img.entrypoint, Env: img.env ?? ['PATH=/bin'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layer.digest}`] },
  });
  const manifest = JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: Buffer.byteLength(config) },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layer.digest}`, size: layer.size }],
  });
  const desc = {
    mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: Buffer.byteLength(manifest),
    platform: { architecture: 'amd64', os: 'linux' },
    annotations: { 'io.containerd.image.name': img.name, 'org.opencontainers.image.ref.name': img.name.split(':').pop() },
  };
  return { config, manifest, desc };
}

/** The rootfs layer as a tar (numeric owner root). */
function buildLayer(work: string, appBinary: string): string {
  const root = join(work, 'rootfs');
  rmSync(root, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev']) mkdirSync(join(root, d), { recursive: true });
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} not found (install busybox-static)`);
  copyFileSync(BUSYBOX, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  const applets = run(BUSYBOX, ['--list']).stdout.split('\n').filter((a) => /^[a-z0-9_.[-]+$/.test(a) && a !== 'busybox');
  for (const a of applets) symlinkSync('busybox', join(root, 'bin', a));
  copyFileSync(appBinary, join(root, 'app'));
  chmodSync(join(root, 'app'), 0o755);
  writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  writeFileSync(join(root, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  const tar = join(work, 'layer.tar');
  run('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-cf', tar, '.']);
  return tar;
}

/** Write one OCI archive holding both images (app and pause); return its path. */
export function buildImageArchive(work: string, appBinary: string): string {
  mkdirSync(work, { recursive: true });
  const layout = join(work, 'oci');
  rmSync(layout, { recursive: true, force: true });
  const blobs = join(layout, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const tarPath = buildLayer(work, appBinary);
  const layerBytes = readFileSync(tarPath);
  const layer = { digest: sha(layerBytes), size: layerBytes.length };
  writeFileSync(join(blobs, layer.digest), layerBytes);
  const manifests = [];
  for (const img of [{ name: APP_IMAGE, entrypoint: ['/app'] }, { name: PAUSE_IMAGE, entrypoint: ['/app', 'pause'] }]) {
    const d = ociDocuments(img, layer);
    writeFileSync(join(blobs, sha(d.config)), d.config);
    writeFileSync(join(blobs, sha(d.manifest)), d.manifest);
    manifests.push(d.desc);
  }
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }));
  const archive = join(work, 'images.tar');
  run('tar', ['-C', layout, '-cf', archive, 'oci-layout', 'index.json', 'blobs']);
  rmSync(tarPath, { force: true });
  rmSync(join(work, 'rootfs'), { recursive: true, force: true });
  return archive;
}

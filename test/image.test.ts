/**
 * `npm run image`: the OCI archive is valid (skopeo reads it, umoci unpacks it) and the unpacked root
 * filesystem runs: rolltrace (compiled, native modules built for the image's Node and libpcap) analyzes a
 * bundle as nobody and agrees with the repository, and the node tools of every source are there.
 * The first build on a machine downloads Debian trixie (minutes); later ones reuse
 * /var/cache/rolltrace/image/ and rebuild only rolltrace's own layer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, ROOT } from './helpers/cli.js';
import { runAsync } from './helpers/run.js';
// @ts-expect-error: plain .mjs build script, no types
import { IMAGE_NAME } from '../scripts/image.mjs';

const run = (cmd: string, args: string[], opts: Parameters<typeof runAsync>[2] = {}) => runAsync(cmd, args, { timeoutMs: 1500000, ...opts });
const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version as string;

describe('npm run image', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'rolltrace-image-'));
  const archive = join(tmp, 'rolltrace-image.tar');
  const rootfs = join(tmp, 'bundle', 'rootfs');
  let built: Awaited<ReturnType<typeof run>>;
  const inImage = (args: string[], user = '0:0') => run('chroot', [`--userspec=${user}`, rootfs, ...args], { env: { PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: '/tmp' } });

  beforeAll(async () => {
    built = await run(process.execPath, [join(ROOT, 'scripts/image.mjs'), '--out', archive], { cwd: ROOT });
    if (built.code !== 0) return;
    mkdirSync(join(tmp, 'layout'));
    await run('tar', ['-xf', archive, '-C', join(tmp, 'layout')]);
    const up = await run('umoci', ['unpack', '--image', `${join(tmp, 'layout')}:${version}`, join(tmp, 'bundle')]);
    if (up.code !== 0) throw new Error(`umoci unpack: ${up.stderr}`);
    mkdirSync(join(rootfs, 'proc'), { recursive: true });
    await run('mount', ['-t', 'proc', 'proc', join(rootfs, 'proc')]);
  }, 1_600_000);

  afterAll(async () => {
    if (existsSync(join(rootfs, 'proc'))) await run('umount', [join(rootfs, 'proc')]);
    rmSync(tmp, { recursive: true, force: true });
  });

  it('builds one OCI archive that skopeo reads, with the name deploy/ uses', async () => {
    expect(built.code, built.stderr).toBe(0);
    expect(built.stdout.split('\n')[0]).toBe(archive);
    const inspect = await run('skopeo', ['inspect', `oci-archive:${archive}`]);
    expect(inspect.code, inspect.stderr).toBe(0);
    const info = JSON.parse(inspect.stdout);
    expect(info.Architecture).toBe('amd64');
    expect(info.Os).toBe('linux');
    expect(info.Layers).toHaveLength(3);
    expect(info.Labels['org.opencontainers.image.version']).toBe(version);
    const index = JSON.parse(readFileSync(join(tmp, 'layout', 'index.json'), 'utf8'));
    expect(index.manifests[0].annotations['io.containerd.image.name']).toBe(IMAGE_NAME);
    const config = JSON.parse((await run('skopeo', ['inspect', '--config', `oci-archive:${archive}`])).stdout);
    expect(config.config.Entrypoint).toEqual(['/usr/local/bin/rolltrace']);
  });

  it('runs rolltrace from the unpacked image: analyze as nobody, the same answer as the repository', async () => {
    expect((await inImage(['node', '--version'])).stdout).toMatch(/^v20\./);
    const v = await inImage(['rolltrace', '--version']);
    expect(v.stderr).toBe('');
    expect(v.stdout.trim()).toBe(version);
    copyFileSync(join(ROOT, 'fixtures/bundles/race-synthetic.rtb'), join(rootfs, 'tmp', 'race.rtb'));
    chmodSync(join(rootfs, 'tmp', 'race.rtb'), 0o644);
    const got = await inImage(['rolltrace', 'analyze', '/tmp/race.rtb', '--format', 'json'], '65534:65534');
    expect(got.stderr).toBe('');
    expect(got.code).toBe(1);
    const want = cli(['analyze', join(ROOT, 'fixtures/bundles/race-synthetic.rtb'), '--format', 'json']);
    expect(JSON.parse(got.stdout).bundle.sources).toEqual(JSON.parse(want.stdout).bundle.sources);
    expect(got.stdout.replaceAll('/tmp/race.rtb', 'B')).toBe(want.stdout.replaceAll(join(ROOT, 'fixtures/bundles/race-synthetic.rtb'), 'B'));
    // no TypeScript toolchain in the image
    for (const dev of ['tsx', 'typescript', 'vitest']) expect(existsSync(join(rootfs, 'opt/rolltrace/node_modules', dev)), dev).toBe(false);
  });

  it('has the native modules built for the image, and every tool the sources run', async () => {
    const native = await inImage(['sh', '-c', `cd /opt/rolltrace && node -e "const D = require('better-sqlite3'); new D(':memory:'); const c = require('cap'); console.log(typeof c.Cap.deviceList)"`]);
    expect(native.stderr).toBe('');
    expect(native.stdout.trim()).toBe('function');
    // rolltrace's capture addon: the packets source's backend in the image (recorder/sources/packets/native.ts)
    const addon = await inImage(['sh', '-c', `cd /opt/rolltrace && node -e "console.log(require('./native/capture/build/Release/rolltrace_capture.node').version())" && ldd native/capture/build/Release/rolltrace_capture.node`]);
    expect(addon.stderr).toBe('');
    expect(addon.stdout).toMatch(/^libpcap version 1\.10/);
    expect(addon.stdout).toMatch(/libpcap\.so\.0\.8 => /);
    // cap links the image's libpcap
    expect((await inImage(['sh', '-c', 'ldd /opt/rolltrace/node_modules/cap/build/Release/cap.node'])).stdout).toMatch(/libpcap\.so\.0\.8 => \/(usr\/)?lib\/x86_64-linux-gnu\/libpcap/);
    expect((await inImage(['tcpdump', '--version'])).stdout).toMatch(/libpcap version 1\.10/);
    expect((await inImage(['bpftrace', '--version'])).stdout).toMatch(/^bpftrace v0\.\d+/);
    expect((await inImage(['strace', '-V'])).stdout).toMatch(/^strace -- version 6\./);
    expect((await inImage(['nft', '--version'])).stdout).toMatch(/^nftables v1\./);
    expect((await inImage(['iptables', '--version'])).stdout).toMatch(/\(nf_tables\)/);
    const ct = await inImage(['conntrack', '--version']);
    expect(ct.stdout + ct.stderr).toMatch(/conntrack v1\.4/);
    expect((await inImage(['ip', '-V'])).stdout).toMatch(/iproute2/);
  });
});

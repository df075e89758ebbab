// Pod discovery without the API: a server placed in a kubelet-style cgroup (systemd driver,
// containerd scope) under a private cgroup2 subtree; the strace source attaches when the pod appears
// (ctx.podsChanged; --strace all) and the ebpf source maps the listener's cgroup id to the pod UID.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { scanPodCgroups } from '../recorder/sources/ebpf/index.js';
import { baseOpts, ctxFor, startTracers } from './helpers/sources.js';
import { cgroupOf, findPodPids } from '../recorder/procfs/index.js';

const R = randomBytes(3).toString('hex');
const NS = `rt-st-pod-${R}`;
const CG_ROOT = ['/sys/fs/cgroup/unified', '/sys/fs/cgroup'].find((r) => existsSync(join(r, 'cgroup.procs')))!;
const UID = randomUUID();
const CID = randomBytes(32).toString('hex');
const TOP = join(CG_ROOT, `rt-st-${R}`);
const DIRS = [
  TOP, join(TOP, 'kubepods.slice'), join(TOP, 'kubepods.slice', 'kubepods-besteffort.slice'),
  join(TOP, 'kubepods.slice', 'kubepods-besteffort.slice', `kubepods-besteffort-pod${UID.replace(/-/g, '_')}.slice`),
];
DIRS.push(join(DIRS[3]!, `cri-containerd-${CID}.scope`));
const SERVER = fileURLToPath(new URL('../fixtures/strace/server.cjs', import.meta.url));
const sh = (...a: string[]) => execFileSync(a[0]!, a.slice(1), { stdio: 'pipe' }).toString();
let server: ChildProcess | null = null;

beforeAll(() => {
  sh('ip', 'netns', 'add', NS);
  sh('ip', '-n', NS, 'link', 'set', 'lo', 'up');
  sh('ip', '-n', NS, 'link', 'add', `rtst${R}`, 'type', 'veth', 'peer', 'name', `rtst${R}p`);
  sh('ip', '-n', NS, 'addr', 'add', '10.81.0.9/32', 'dev', `rtst${R}`);
  sh('ip', '-n', NS, 'link', 'set', `rtst${R}`, 'up');
  for (const d of DIRS) mkdirSync(d);
});
afterAll(() => {
  if (server?.pid && server.exitCode === null) try { process.kill(server.pid, 'SIGKILL'); } catch { /* gone */ }
  for (const d of [...DIRS].reverse()) try { rmdirSync(d); } catch { /* busy or gone */ }
  try { sh('ip', 'netns', 'del', NS); } catch { /* gone */ }
});

describe('pods found from /proc/PID/cgroup', () => {
  it('attaches to a pod that appears later and maps ebpf cgroup ids to the pod', async () => {
    server = spawn('ip', ['netns', 'exec', NS, 'node', SERVER, '18082'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => server!.stdout!.once('data', () => res()));
    const pid = server.pid!;
    writeFileSync(join(DIRS[4]!, 'cgroup.procs'), String(pid));
    expect(cgroupOf(pid)).toMatchObject({ podUid: UID, containerId: CID, qos: 'besteffort' });
    expect([...findPodPids(new Set([UID])).keys()]).toEqual([pid]);
    expect(scanPodCgroups().get(Number(sh('stat', '-c', '%i', DIRS[4]!)))).toBe(UID);

    const opts = baseOpts({ packets: false, straceMode: 'all', nft: false, conntrack: false, kube: true });
    const ctx = ctxFor(opts);
    const { st, eb, sst, seb } = await startTracers(opts, ctx);
    expect(sst.events).toEqual([]); // no pods known yet, no --pid
    ctx.pods.set(UID, { namespace: 'default', name: 'web-1', ip: '10.81.0.9', uid: UID });
    ctx.podsChanged();
    await new Promise((r) => setTimeout(r, 500));
    process.kill(pid, 'SIGTERM');
    await new Promise<void>((res) => server!.once('exit', () => res()));
    await new Promise((r) => setTimeout(r, 400));
    await st.stop(); await eb.stop();

    const att = sst.events.find((e) => e.kind === 'process-attached');
    expect(att?.attrs).toMatchObject({ pid, pod_uid: UID, container_id: CID, addrs: ['10.81.0.9'] });
    expect(sst.events.some((e) => e.kind === 'listener-closed' && (e.attrs as { port: number }).port === 18082)).toBe(true);
    const ec = seb.events.find((e) => e.kind === 'listener-closed' && (e.attrs as { pid?: number }).pid === pid);
    expect(ec?.attrs).toMatchObject({ port: 18082, pod_uid: UID, how: 'tcp-state' });
  });
});

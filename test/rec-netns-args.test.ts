/**
 * `record --netns PATH|PID` is validated before anything is recorded: a missing file, a file that is
 * no namespace, another type of namespace (a /proc link or a bind-mounted nsfs file) and a PID that
 * does not exist each give one line and exit 2. A PID and /run/netns/NAME name the same namespace.
 * Root: it creates a throwaway netns and a bind mount, removed in afterAll.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsExec, netnsHostname, parseIpAddrJson, resolveNetns } from '../recorder/netns.js';
import { cli } from './helpers/cli.js';

const ns = `rtnsarg-${randomBytes(3).toString('hex')}`;
const dir = mkdtempSync(join(tmpdir(), 'rtnsarg-'));
const utsFile = join(dir, 'uts');
let mounted = false;
let sleeper: ChildProcess | null = null;

beforeAll(async () => {
  execFileSync('ip', ['netns', 'add', ns]);
  writeFileSync(utsFile, '');
  execFileSync('mount', ['--bind', '/proc/self/ns/uts', utsFile]);
  mounted = true;
  // a node container's stand-in: its own netns and hostname (ip, unshare and sh exec one another)
  sleeper = spawn('ip', ['netns', 'exec', ns, 'unshare', '--uts', 'sh', '-c', `hostname ${ns}-node && exec sleep 60`], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !/sleep/.test(safeRead(`/proc/${sleeper.pid}/comm`)); i++) await new Promise((r) => setTimeout(r, 20));
});

afterAll(() => {
  if (sleeper?.pid && sleeper.exitCode === null) { try { process.kill(sleeper.pid, 'SIGKILL'); } catch { /* gone */ } }
  if (mounted) { try { execFileSync('umount', [utsFile]); } catch { /* gone */ } }
  rmSync(dir, { recursive: true, force: true });
  try { execFileSync('ip', ['netns', 'del', ns]); } catch { /* gone */ }
});

function safeRead(p: string): string {
  try { return readFileSync(p, 'utf8'); } catch { return ''; }
}

function recordWith(netns: string) {
  const out = join(dir, `x-${randomBytes(3).toString('hex')}.rtb`);
  const r = cli(['record', '--out', out, '--no-kube', '--no-packets', '--no-strace', '--no-ebpf', '--duration', '1', '--netns', netns], { timeoutMs: 30_000 });
  return { ...r, lines: r.stderr.trim().split('\n'), wrote: existsSync(out) };
}

describe('record --netns: bad arguments (one line, exit 2, nothing written)', () => {
  it.each([
    ['a path that does not exist', '/run/netns/rtnsarg-absent-x', /^rolltrace: --netns \/run\/netns\/rtnsarg-absent-x: no such file$/],
    ['a regular file', '/etc/hostname', /^rolltrace: --netns \/etc\/hostname: not a namespace file \(expected .*\)$/],
    ['a directory', '/run', /^rolltrace: --netns \/run: not a namespace file/],
    ['a mount namespace link', '/proc/self/ns/mnt', /^rolltrace: --netns \/proc\/self\/ns\/mnt: not a network namespace \(it is a mnt namespace\)$/],
    ['a PID that does not exist', '2147483646', /^rolltrace: --netns 2147483646: no process with that id$/],
  ])('%s', (_what, arg, re) => {
    const r = recordWith(arg);
    expect(r.code).toBe(2);
    expect(r.lines).toHaveLength(1);
    expect(r.lines[0]).toMatch(re);
    expect(r.wrote).toBe(false);
  });

  it('a bind-mounted namespace file of another type (uts): nsenter --net refuses it', () => {
    const r = recordWith(utsFile);
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([`rolltrace: --netns ${utsFile}: not a network namespace`]);
    expect(r.wrote).toBe(false);
  });
});

describe('resolveNetns', () => {
  it('a PID names /proc/PID/ns/net, the same namespace as /run/netns/NAME', () => {
    const byName = resolveNetns(`/run/netns/${ns}`);
    const byPid = resolveNetns(String(sleeper!.pid));
    expect(byPid.path).toBe(`/proc/${sleeper!.pid}/ns/net`);
    expect(byPid.inode).toBe(byName.inode);
    expect(byName.inode).toBe(statSync(`/run/netns/${ns}`).ino);
    expect(byName.own).toBe(false);
    expect(netnsExec(byName)).toEqual(['nsenter', `--net=/run/netns/${ns}`]);
  });

  it('the node name of a PID is its process\'s hostname; a namespace file has none', () => {
    expect(netnsHostname(resolveNetns(String(sleeper!.pid)))).toBe(`${ns}-node`);
    expect(netnsHostname(resolveNetns(`/run/netns/${ns}`))).toBeNull();
  });

  it('the recorder\'s own namespace is accepted and flagged as such', () => {
    const own = resolveNetns(String(process.pid));
    expect(own.own).toBe(true);
    expect(own.inode).toBe(statSync('/proc/self/ns/net').ino);
    expect(netnsExec(undefined)).toEqual([]);
  });
});

describe('parseIpAddrJson (ip -j addr show of a node namespace)', () => {
  it('keeps global addresses, drops loopback and link-local ones', () => {
    const text = readFileSync(new URL('../fixtures/ip/addr-node-netns.json', import.meta.url), 'utf8');
    expect(parseIpAddrJson(text)).toEqual(['172.18.0.3', 'fc00:f853:ccd:e793::3']);
  });
  it('unparsable or foreign input gives no address', () => {
    expect(parseIpAddrJson('')).toEqual([]);
    expect(parseIpAddrJson('{"x":1}')).toEqual([]);
    expect(parseIpAddrJson('[{"addr_info":[{"local":5}]}, null]')).toEqual([]);
  });
});

import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parseStraceText, parseSockaddr, StraceParser, straceTs } from '../recorder/sources/strace/parse.js';
import {
  parseCgroupLine, parseCgroupFile, parseFibTrieLocal, parseIfInet6, parseProcNetTcp, socketInode, TCP_LISTEN,
} from '../recorder/procfs/parse.js';

const F = (p: string) => readFileSync(new URL(`../fixtures/${p}`, import.meta.url), 'utf8');
// listeners the fixture server had open before strace attached (from /proc at attach time)
const PRE = [{ pid: 12893, fd: 27, addr: '0.0.0.0', port: 8080, inode: 25810 }, { pid: 12893, fd: 28, addr: '::', port: 8081, inode: 25811 }];

describe('strace parser on real output (strace 6.1, -f -ttt -q -y)', () => {
  it('attach + SIGTERM + graceful close: golden events', () => {
    const r = parseStraceText(F('strace/attach-sigterm.txt'), { tgidOf: () => 12893, listeners: PRE });
    expect(r).toEqual(JSON.parse(F('strace/attach-sigterm.expected.json')));
    const kinds = r.events.map((e) => e.kind);
    expect(kinds).toEqual(['accept', 'accept', 'signal', 'listener-closed', 'listener-closed', 'process-exit']);
    const sig = r.events[2]!;
    expect(sig.attrs).toMatchObject({ signame: 'SIGTERM', signo: 15, phase: 'delivered', sender_pid: 12885 });
    const closed = r.events.filter((e) => e.kind === 'listener-closed').map((e) => e.attrs);
    expect(closed).toEqual([
      { pid: 12893, fd: 27, addr: '0.0.0.0', port: 8080, how: 'close' },
      { pid: 12893, fd: 28, addr: '::', port: 8081, how: 'close' },
    ]);
    expect(Math.abs(r.events[3]!.ts_ns - sig.ts_ns - 4_413_000)).toBeLessThan(512); // 4.413 ms SIGTERM -> close
    // the worker threads' "+++ exited" lines are threads, not the process: exactly one process-exit
    expect(r.events.at(-1)!.attrs).toEqual({ pid: 12893, code: 0, signal: null });
  });

  it('without the /proc listeners, closes of pre-attach sockets are not invented', () => {
    const r = parseStraceText(F('strace/attach-sigterm.txt'), { tgidOf: () => 12893 });
    expect(r.events.map((e) => e.kind)).toEqual(['signal', 'process-exit']);
  });

  it('launched with --seccomp-bpf, bind+listen seen, killed by SIGKILL with the listener open', () => {
    const r = parseStraceText(F('strace/launch-sigkill.txt'));
    expect(r).toEqual(JSON.parse(F('strace/launch-sigkill.expected.json')));
    const tail = r.events.slice(-4);
    expect(tail.map((e) => e.kind)).toEqual(['listen', 'accept', 'listener-closed', 'process-exit']);
    expect(tail[0]!.attrs).toMatchObject({ addr: '127.0.0.1', port: 9090, how: 'syscall', fd: 3 });
    expect(tail[1]!.attrs).toMatchObject({ fd: 4, listen_fd: 3, peer: '127.0.0.1' });
    expect(tail[2]!.attrs).toMatchObject({ port: 9090, how: 'exit' });
    expect(tail[3]!.attrs).toEqual({ pid: (tail[0]!.attrs as { pid: number }).pid, code: null, signal: 'SIGKILL' });
  });

  it('joins <unfinished ...> with <... resumed> per thread, stamped at entry', () => {
    const p = new StraceParser({ tgidOf: () => 100, listeners: [{ pid: 100, fd: 5, addr: '10.0.0.1', port: 80, inode: 777 }] });
    expect(p.line('101 1700000000.000001 close(5<socket:[777]> <unfinished ...>')).toEqual([]);
    expect(p.line('102 1700000000.000002 close(9</dev/null> <unfinished ...>')).toEqual([]);
    expect(p.line('102 1700000000.000003 <... close resumed>) = 0')).toEqual([]);
    const out = p.line('101 1700000000.000004 <... close resumed>) = 0');
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ kind: 'listener-closed', ts_ns: 1700000000000001000, attrs: { fd: 5, port: 80, how: 'close', pid: 100 } });
    expect(p.openListeners()).toEqual([]);
    expect(p.malformed).toBe(0);
  });

  it('shutdown of a listener, failed close, dup-free second close, and exit with no listener left', () => {
    const p = new StraceParser({ listeners: [{ pid: 7, fd: 3, addr: '0.0.0.0', port: 8080, inode: 1 }] });
    expect(p.line('7 1.000000 close(3<socket:[1]>) = -1 EBADF (Bad file descriptor)')).toEqual([]);
    expect(p.line('7 1.000001 shutdown(3<socket:[1]>, SHUT_RDWR) = 0')[0]).toMatchObject({ kind: 'listener-closed', attrs: { how: 'shutdown' } });
    expect(p.line('7 1.000002 close(3<socket:[1]>) = 0')).toEqual([]);
    expect(p.line('7 1.000003 +++ exited with 3 +++').map((e) => e.kind)).toEqual(['process-exit']);
  });

  it('malformed lines are skipped and counted, never fatal', () => {
    const text = [
      'garbage', '12 notatime close(3) = 0', '12 1.5 <... close resumed>) = 0', '12 1.6 frobnicate', '',
      '12 1.7 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER, si_pid=1, si_uid=0} ---',
      '12 1.8 +++ exited with x +++', '12 1.9 listen(3<socket:[5]>, 511',
    ].join('\n');
    const r = parseStraceText(text);
    expect(r.events.map((e) => e.kind)).toEqual(['signal']);
    expect(r.malformed).toBe(6);
    expect(r.lines).toBe(7);
  });

  it('timestamps and sockaddrs', () => {
    expect(straceTs('1795292100', '686599')).toBe(1795292100686599000);
    expect(parseSockaddr('{sa_family=AF_INET6, sin6_port=htons(8081), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::", &sin6_addr), sin6_scope_id=0}'))
      .toEqual({ addr: '::', port: 8081 });
    expect(parseSockaddr('{sa_family=AF_UNIX, sun_path="/x"}')).toBeNull();
  });
});

describe('procfs parsers on files captured here', () => {
  it('net/tcp and tcp6 listeners match the fd socket inodes', () => {
    const v4 = parseProcNetTcp(F('procfs/net-tcp.txt')), v6 = parseProcNetTcp(F('procfs/net-tcp6.txt'));
    expect(v4.malformed + v6.malformed).toBe(0);
    const l = [...v4.rows, ...v6.rows].filter((r) => r.state === TCP_LISTEN);
    expect(l.map((r) => `${r.addr}:${r.port}`)).toEqual(['0.0.0.0:8080', ':::8081']);
    const inodes = F('procfs/fd-links.txt').split('\n').map((x) => socketInode(x.split(' ')[1] ?? '')).filter((x) => x !== null);
    expect(inodes).toEqual(l.map((r) => r.inode));
    expect(parseProcNetTcp('  0: zz:1F90 00000000:0000 0A x\nshort').malformed).toBe(2);
  });

  it('namespace addresses from fib_trie and if_inet6', () => {
    expect(parseFibTrieLocal(F('procfs/fib_trie.txt')).sort()).toEqual(['10.78.0.7', '127.0.0.1']);
    const v6 = parseIfInet6(F('procfs/if_inet6.txt'));
    expect(v6.filter((x) => x.scope === 0).map((x) => x.addr)).toEqual(['fd78::7']);
    expect(v6.map((x) => x.addr)).toContain('::1');
  });

  it('cgroup lines of containerd, CRI-O, systemd and cgroupfs drivers', () => {
    const lines = F('procfs/cgroup-kube-lines.txt').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines.length).toBe(9);
    for (const l of lines) {
      const [uid, cid, qos, line] = l.split('\t');
      const m = parseCgroupLine(line!);
      if (uid === '-') { expect(m).toBeNull(); continue; }
      expect(m).toMatchObject({ podUid: uid, containerId: cid === '-' ? null : cid, qos });
    }
    expect(parseCgroupFile(F('procfs/cgroup-host.txt'))).toBeNull();
  });
});

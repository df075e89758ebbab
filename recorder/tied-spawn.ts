/**
 * Children that must not outlive the recorder (tcpdump, bpftrace): started through util-linux's
 * `setpriv --pdeathsig INT` when it is there, so that a recorder killed outright (SIGKILL, OOM) still
 * stops them the way Ctrl-C would (tcpdump flushes its file, bpftrace detaches its probes). setpriv
 * execs the program: the child's pid is the program's, signals reach it directly.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';

let setpriv: boolean | null = null;

export function spawnTied(bin: string, args: string[], opts: SpawnOptions): ChildProcess {
  setpriv ??= spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;
  return setpriv ? spawn('setpriv', ['--pdeathsig', 'INT', bin, ...args], opts) : spawn(bin, args, opts);
}

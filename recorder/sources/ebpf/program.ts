/**
 * Generates the bpftrace program from the running kernel's tracepoint formats (pure: formats in,
 * program text out). Every probe prints one tab-separated line starting with "RT", comm last.
 */
import type { KernelOffsets } from './btf.js';
import type { TpFormat } from './format.js';

export interface ProgramInput {
  sockState?: TpFormat | null;
  sendReset?: TpFormat | null;
  signalGenerate?: TpFormat | null;
  processExit?: TpFormat | null;
  /** kernel BTF available: netns inode from struct sock, exit code from curtask */
  btf: boolean;
  /**
   * the same fields by offset (read from BTF by btf.ts): the program then names no struct type, and
   * bpftrace skips building and clang-parsing C definitions from BTF (~0.5 s of its start-up)
   */
  offsets?: KernelOffsets | null;
}

export interface Program {
  text: string;
  /** what it records, for the source detail */
  features: string[];
  /** what it cannot record here and why */
  missing: string[];
  resetLayout: 'sockaddr' | 'ports' | null;
}

export function buildProgram(i: ProgramInput): Program {
  const p: string[] = ['BEGIN { printf("RT\\tBEGIN\\t%llu\\n", nsecs); }'];
  const features: string[] = [];
  const missing: string[] = [];
  const o = i.offsets;
  const netns = (sk: string) => (o ? `*(uint32 *)(*(uint64 *)((uint64)${sk} + ${o.skNet}) + ${o.netInum})`
    : i.btf ? `((struct sock *)${sk})->__sk_common.skc_net.net->ns.inum` : '0');

  const ss = i.sockState;
  if (ss && ['oldstate', 'newstate', 'sport', 'protocol'].every((f) => ss.fields.has(f))) {
    const fam = ss.fields.has('family') ? 'args->family' : '0';
    const v4 = ss.fields.has('saddr') ? 'ntop(args->saddr)' : '"?"';
    const v6 = ss.fields.has('saddr_v6') ? 'ntop(args->saddr_v6)' : '"?"';
    const sk = ss.fields.has('skaddr') ? netns('args->skaddr') : '0';
    p.push(`tracepoint:sock:inet_sock_set_state /args->protocol == 6 && ((args->oldstate == 10 && args->newstate == 7) || (args->oldstate == 7 && args->newstate == 10))/ {
  @watch[pid] = 1;
  printf("RT\\tSK\\t%llu\\t%d\\t%d\\t%d\\t%d\\t%s\\t%s\\t%d\\t%llu\\t%u\\t%s\\n", nsecs, args->oldstate, args->newstate, args->sport, ${fam}, ${v4}, ${v6}, pid, cgroup, ${sk}, comm);
}`);
    features.push('TCP LISTEN<->CLOSE (sock:inet_sock_set_state)');
  } else missing.push('sock:inet_sock_set_state not available');

  const rs = i.sendReset;
  let resetLayout: Program['resetLayout'] = null;
  if (rs && rs.fields.get('saddr')?.array === 28) {
    resetLayout = 'sockaddr';
    const reason = rs.fields.has('reason') ? 'args->reason' : '-1';
    const state = rs.fields.has('state') ? 'args->state' : '0';
    // the RST's network namespace: its socket's, or (no socket: a SYN to a closed port) the device's that
    // received the segment; RSTs of every namespace on the machine reach this tracepoint
    const skNs = rs.fields.has('skaddr') ? netns('args->skaddr') : '0';
    const nsStmt = i.btf && rs.fields.has('skbaddr')
      ? `\n  $ns = (uint32)0;\n  if (args->skaddr != 0) { $ns = ${skNs}; } else { $ns = ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum; }`
      : '';
    p.push(`tracepoint:tcp:tcp_send_reset {${nsStmt}
  printf("RT\\tRST\\t%llu\\t%d\\t%d\\t%rx\\t%rx\\t%d\\t%u\\t%s\\n", nsecs, ${state}, ${reason}, buf(args->saddr, 28), buf(args->daddr, 28), pid, ${nsStmt ? '$ns' : skNs}, comm);
}`);
    features.push(`RSTs sent (tcp:tcp_send_reset, sockaddr layout${rs.fields.has('reason') ? ', with reason' : ''})`);
  } else if (rs && rs.fields.has('sport') && rs.fields.has('dport')) {
    resetLayout = 'ports';
    const state = rs.fields.has('state') ? 'args->state' : '0';
    const fam = rs.fields.has('family') ? 'args->family' : '0';
    p.push(`tracepoint:tcp:tcp_send_reset {
  printf("RT\\tRSTP\\t%llu\\t%d\\t%d\\t%d\\t%d\\t%s\\t%s\\t%s\\t%s\\t%d\\t%s\\n", nsecs, ${state}, ${fam}, args->sport, args->dport, ntop(args->saddr), ntop(args->daddr), ntop(args->saddr_v6), ntop(args->daddr_v6), pid, comm);
}`);
    features.push('RSTs sent (tcp:tcp_send_reset, port layout, no reason)');
  } else missing.push('tcp:tcp_send_reset not available or unknown layout');

  const sg = i.signalGenerate;
  if (sg && ['sig', 'pid', 'comm'].every((f) => sg.fields.has(f))) {
    const res = sg.fields.has('result') ? 'args->result' : '-1';
    p.push(`tracepoint:signal:signal_generate /args->sig == 15 || args->sig == 9/ {
  @watch[args->pid] = 1;
  printf("RT\\tSIG\\t%llu\\t%d\\t%d\\t%d\\t%d\\t%s\\t%s\\n", nsecs, args->sig, args->pid, ${res}, pid, args->comm, comm);
}`);
    features.push('SIGTERM/SIGKILL generated (signal:signal_generate)');
  } else missing.push('signal:signal_generate not available');

  const pe = i.processExit;
  if (pe) {
    const code = o ? `*(int32 *)((uint64)curtask + ${o.exitCode})` : i.btf ? 'curtask->exit_code' : '-1';
    p.push(`tracepoint:sched:sched_process_exit /@watch[pid] && pid == tid/ {
  delete(@watch[pid]);
  printf("RT\\tEXIT\\t%llu\\t%d\\t%d\\t%s\\n", nsecs, pid, ${code}, comm);
}`);
    features.push('exits of processes that listened or got SIGTERM/SIGKILL (sched:sched_process_exit)');
  } else missing.push('sched:sched_process_exit not available');
  p.push('END { clear(@watch); }');
  return { text: p.join('\n') + '\n', features, missing, resetLayout };
}

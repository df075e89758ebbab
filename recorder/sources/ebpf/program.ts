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
  /**
   * read the tracepoint's fields at their format-file offsets from `(uint64)args` instead of through
   * `args->`: bpftrace 0.17 reads all of available_events ~20 times for each `args->` in the program (its
   * semantic passes), ~12 ms each here, and ~0.3 s of its start-up went to the 26 of them. The filters
   * then run as an `if` in the probe's body (a filter cannot read the body's variables). Same lines printed.
   */
  fieldOffsets?: boolean;
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
  /** a field of the tracepoint: args->name, or (fieldOffsets) read at its offset from $a = (uint64)args */
  const arg = (f: TpFormat, name: string): string => {
    const fd = f.fields.get(name);
    if (!i.fieldOffsets || !fd || fd.array !== null || fd.signed === null || ![1, 2, 4, 8].includes(fd.size)) return `args->${name}`;
    return `*(${fd.signed ? '' : 'u'}int${fd.size * 8} *)($a + ${fd.offset})`;
  };
  /** an inline array field: its address (for buf/str), or null to go through args-> */
  const at = (f: TpFormat, name: string): string | null => {
    const fd = f.fields.get(name);
    return i.fieldOffsets && fd && fd.array !== null ? `$a + ${fd.offset}` : null;
  };
  /** a probe on a tracepoint's fields; with fieldOffsets its filter becomes an `if` around the body */
  const probe = (tp: string, filter: string | null, body: string[]): string => {
    if (!i.fieldOffsets) return `${tp}${filter ? ` /${filter}/` : ''} {\n${body.map((l) => `  ${l}`).join('\n')}\n}`;
    const inner = filter ? [`if (${filter}) {`, ...body.map((l) => `  ${l}`), '}'] : body;
    return `${tp} {\n${['$a = (uint64)args;', ...inner].map((l) => `  ${l}`).join('\n')}\n}`;
  };

  const ss = i.sockState;
  if (ss && ['oldstate', 'newstate', 'sport', 'protocol'].every((f) => ss.fields.has(f))) {
    const a = (n: string) => arg(ss, n);
    const fam = ss.fields.has('family') ? a('family') : '0';
    const v4at = ss.fields.get('saddr')?.array === 4 ? at(ss, 'saddr') : null;
    const v4 = v4at ? `ntop(2, *(uint32 *)(${v4at}))` : ss.fields.has('saddr') ? 'ntop(args->saddr)' : '"?"';
    // an inline char[16] cannot be passed to ntop by address: this one stays args->
    const v6 = ss.fields.has('saddr_v6') ? 'ntop(args->saddr_v6)' : '"?"';
    const sk = ss.fields.has('skaddr') ? netns(a('skaddr')) : '0';
    const [old, nw] = [a('oldstate'), a('newstate')];
    p.push(probe('tracepoint:sock:inet_sock_set_state', `${a('protocol')} == 6 && ((${old} == 10 && ${nw} == 7) || (${old} == 7 && ${nw} == 10))`, [
      '@watch[pid] = 1;',
      `printf("RT\\tSK\\t%llu\\t%d\\t%d\\t%d\\t%d\\t%s\\t%s\\t%d\\t%llu\\t%u\\t%s\\n", nsecs, ${old}, ${nw}, ${a('sport')}, ${fam}, ${v4}, ${v6}, pid, cgroup, ${sk}, comm);`,
    ]));
    features.push('TCP LISTEN<->CLOSE (sock:inet_sock_set_state)');
  } else missing.push('sock:inet_sock_set_state not available');

  const rs = i.sendReset;
  let resetLayout: Program['resetLayout'] = null;
  if (rs && rs.fields.get('saddr')?.array === 28) {
    resetLayout = 'sockaddr';
    const a = (n: string) => arg(rs, n);
    const reason = rs.fields.has('reason') ? a('reason') : '-1';
    const state = rs.fields.has('state') ? a('state') : '0';
    // the RST's network namespace: its socket's, or (no socket: a SYN to a closed port) the device's that
    // received the segment; RSTs of every namespace on the machine reach this tracepoint
    const skNs = rs.fields.has('skaddr') ? netns(a('skaddr')) : '0';
    const devNs = o ? `*(uint32 *)(*(uint64 *)(*(uint64 *)((uint64)${a('skbaddr')} + ${o.skbDev}) + ${o.devNet}) + ${o.netInum})`
      : `((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum`;
    const ns = i.btf && rs.fields.has('skbaddr')
      ? ['$ns = (uint32)0;', `if (${a('skaddr')} != 0) { $ns = ${skNs}; } else { $ns = ${devNs}; }`] : [];
    const addr = (n: string) => `buf(${at(rs, n) ?? `args->${n}`}, 28)`;
    p.push(probe('tracepoint:tcp:tcp_send_reset', null, [...ns,
      `printf("RT\\tRST\\t%llu\\t%d\\t%d\\t%rx\\t%rx\\t%d\\t%u\\t%s\\n", nsecs, ${state}, ${reason}, ${addr('saddr')}, ${addr('daddr')}, pid, ${ns.length ? '$ns' : skNs}, comm);`,
    ]));
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
    const a = (n: string) => arg(sg, n);
    const res = sg.fields.has('result') ? a('result') : '-1';
    const comm = at(sg, 'comm');
    p.push(probe('tracepoint:signal:signal_generate', `${a('sig')} == 15 || ${a('sig')} == 9`, [
      `@watch[${a('pid')}] = 1;`,
      `printf("RT\\tSIG\\t%llu\\t%d\\t%d\\t%d\\t%d\\t%s\\t%s\\n", nsecs, ${a('sig')}, ${a('pid')}, ${res}, pid, ${comm ? `str(${comm}, ${sg.fields.get('comm')!.array})` : 'args->comm'}, comm);`,
    ]));
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

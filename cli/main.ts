/**
 * The `rolltrace` command line (contract: ../shared/DESIGN.md "The CLI contract").
 * Every command module is imported lazily so that `analyze` never loads the recorder, cap or the lab.
 * Exit codes: 0 ok; 1 the analysis found failures; 2 usage or input error (one line, no stack).
 */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { InputError, isInputError } from '../schemas/errors.js';
import { rolltraceVersion } from '../schemas/version.js';

export const VERSION: string = rolltraceVersion();

const collect = (v: string, prev: string[] = []) => [...prev, v];
const int = (name: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number`);
  return n;
};

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('rolltrace')
    .description('Flight recorder for Kubernetes rollouts: SIGTERM vs rule-removal, one clock, one bundle.')
    .version(VERSION)
    .showHelpAfterError(false)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program.command('record')
    .description('record a rollout on this node into a bundle (root)')
    .requiredOption('--out <file>', 'bundle to write (.rtb)')
    .option('--kubeconfig <path>', 'kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)')
    .option('--namespace <ns>', 'namespace to watch', 'default')
    .option('--selector <labels>', 'label selector of the pods to follow')
    .option('--deployment <name>', 'follow this Deployment (its selector)')
    .option('--restart', 'patch the Deployment like `kubectl rollout restart` once recording runs')
    .option('--iface <if>', 'capture interface (repeatable; default: CNI bridge, else any)', collect, [])
    .option('--filter <bpf>', 'BPF capture filter')
    .option('--snaplen <n>', 'bytes kept per packet', int('--snaplen'), 128)
    .option('--probe <url>', 'send probe requests to this URL')
    .option('--rate <hz>', 'probe requests per second', int('--rate'), 10)
    .option('--concurrency <n>', 'probe requests in flight at most', int('--concurrency'), 1)
    .option('--keepalive', 'reuse probe connections')
    .option('--duration <s>', 'stop after this many seconds', int('--duration'))
    .option('--until-rollout-complete', 'stop when the rollout completes (plus a settle period)')
    .option('--settle <s>', 'seconds to keep recording after the rollout completes', int('--settle'), 5)
    .option('--pre-roll <s>', 'with --restart: seconds to record before restarting, so requests in flight at a SIGKILL were seen from their start', int('--pre-roll'), 2)
    .option('--no-packets', 'do not capture packets')
    .option('--strace <mode>', 'when strace attaches: lazy (default: a pod\'s processes once it starts terminating; needs ebpf, else all), all (every process from the start: slows busy pods), off')
    .option('--no-strace', 'do not trace processes with strace (= --strace off)')
    .option('--no-ebpf', 'do not run the bpftrace source')
    .option('--no-nft', 'do not follow nftables/iptables rules')
    .option('--no-conntrack', 'do not follow conntrack events')
    .option('--no-kube', 'do not watch the Kubernetes API')
    .option('--pid <pid>', 'trace this process too (repeatable)', collect, [])
    .option('--max-size <mb>', 'stop packet capture when packet data reaches this size', int('--max-size'))
    .option('--quiet', 'no live status line')
    .option('--netns <path|pid>', 'read kube-proxy\'s rules and conntrack in this network namespace (/run/netns/NAME, /proc/PID/ns/net or a PID: a kind/k3d node container); packets, strace and ebpf stay on the host')
    .action(async (opts) => {
      const { runRecord } = await import('../recorder/record.js');
      setExit(await runRecord(opts));
    });

  program.command('analyze')
    .description('analyze a bundle: per-pod exposure, every failure and its backend, what to change')
    .argument('<file>', 'bundle (.rtb or .rtb.gz)')
    .addOption(new Option('--format <fmt>', 'output format').choices(['text', 'json', 'markdown', 'html']).default('text'))
    .option('--out <path>', 'write the report here instead of stdout')
    .action(async (file: string, opts) => {
      const { runAnalyze } = await import('../analyzer/commands/analyze.js');
      setExit(await runAnalyze(file, opts));
    });

  program.command('timeline')
    .description('print the merged timeline of a bundle')
    .argument('<file>', 'bundle')
    .option('--source <s>', 'only this source (repeatable)', collect, [])
    .option('--since <t>', 'from this instant (ISO, or seconds from start like +12.5)')
    .option('--until <t>', 'up to this instant (ISO, or seconds from start)')
    .option('--pod <p>', 'only events about this pod (name, namespace/name or IP)')
    .option('--packets', 'include every packet (default: only SYN/RST/FIN and ICMP errors)')
    .action(async (file: string, opts) => {
      const { runTimeline } = await import('../analyzer/commands/timeline.js');
      setExit(await runTimeline(file, opts));
    });

  program.command('verify')
    .description('check a bundle: integrity, schema, per-source counts, clean or crashed close')
    .argument('<file>', 'bundle')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, opts) => {
      const { runVerify } = await import('../analyzer/commands/verify.js');
      setExit(await runVerify(file, opts));
    });

  program.command('index')
    .description("write a recorded bundle's packet index into it, for SQL on packets and its views (rolltrace's own commands build it themselves)")
    .argument('<file>', 'bundle')
    .action(async (file: string) => {
      const { runIndex } = await import('../analyzer/commands/index-packets.js');
      setExit(await runIndex(file));
    });

  program.command('import')
    .description('build a bundle from captures made by hand (tcpdump/Wireshark, strace -f -ttt, nft -j monitor, watch JSON lines)')
    .requiredOption('--out <file>', 'bundle to write')
    .option('--pcap <f>', 'pcap or pcapng file (repeatable)', collect, [])
    .option('--strace <f>', 'strace -f -ttt output (repeatable)', collect, [])
    .option('--nft-monitor <f>', 'nft -j monitor output (lines optionally prefixed with an epoch timestamp)')
    .option('--nft-ruleset <f>', 'nft -j list ruleset taken at the start of the capture')
    .option('--iptables-save <f>', 'iptables-save snapshot (kube-proxy iptables mode), first line an epoch or ISO timestamp (repeatable, one per file)', collect, [])
    .option('--conntrack <f>', 'conntrack -E -o timestamp,extended output')
    .option('--watch <f>', 'watch events as JSON lines ({"type":..,"object":..,"ts":..}) or `kubectl get -w -o json` output')
    .option('--force', 'overwrite --out')
    .action(async (opts) => {
      const { runImport } = await import('../recorder/import.js');
      setExit(await runImport(opts));
    });

  program.command('export')
    .description('export a bundle for other tools')
    .argument('<file>', 'bundle')
    .option('--pcap <out>', 'pcapng for Wireshark/tshark, with per-packet comments')
    .option('--perfetto <out>', 'Chrome trace-event JSON for ui.perfetto.dev')
    .action(async (file: string, opts) => {
      const { runExport } = await import('../analyzer/commands/export.js');
      setExit(await runExport(file, opts));
    });

  program.command('redact')
    .description('remove payloads and secrets (and optionally pseudonymize) so a bundle can be shared')
    .argument('<file>', 'bundle')
    .requiredOption('--out <file>', 'redacted bundle to write')
    .option('--pseudonymize', 'map IPs, pod/namespace names and labels to stable pseudonyms')
    .action(async (file: string, opts) => {
      const { runRedact } = await import('../analyzer/commands/redact.js');
      setExit(await runRedact(file, opts));
    });

  program.command('merge')
    .description('merge bundles recorded on several nodes into one')
    .argument('<files...>', 'bundles')
    .requiredOption('--out <file>', 'merged bundle to write')
    .action(async (files: string[], opts) => {
      const { runMerge } = await import('../analyzer/commands/merge.js');
      setExit(await runMerge(files, opts));
    });

  const lab = program.command('lab').description('a one-machine Kubernetes node that reproduces rollouts (root)');
  lab.command('run')
    .description('build the lab, record a scenario with the real recorder, tear down')
    .requiredOption('--scenario <name>', 'race, prestop, iptables, local-blackhole, grace-too-short, not-ready')
    .requiredOption('--out <file>', 'bundle to write')
    .option('--truth <file>', 'write the ground truth (from the lab\'s own clocks) here')
    .option('--seed <n>', 'random seed', int('--seed'))
    .option('--keep', 'keep the lab up after the run (then `rolltrace lab down`)')
    .option('--patch <json|file>', 'strategic merge patch of the Deployment applied (and rolled out) before recording, e.g. an analysis\' recommendation.patch')
    .option('--real', 'on the real node: real control plane, kubelet, containerd and kube-proxy (see docs/lab.md)')
    .option('--proxy-mode <mode>', 'with --real: kube-proxy\'s mode, nftables or iptables (default: the scenario\'s)')
    .action(async (opts) => {
      if (opts.real) {
        const { runRealRun } = await import('../lab/real/run.js');
        setExit(await runRealRun(opts));
        return;
      }
      if (opts.proxyMode !== undefined) throw new InputError('--proxy-mode needs --real (a fast-lab scenario has its own mode)');
      const { runLabRun } = await import('../lab/cli.js');
      setExit(await runLabRun(opts));
    });
  lab.command('up')
    .description('start a lab and keep it running for interactive recording')
    .option('--scenario <name>', 'scenario whose topology to build', 'race')
    .option('--real', 'a real single-node Kubernetes (prints KUBECONFIG=<path>; stop with `lab down`)')
    .option('--proxy-mode <mode>', 'with --real: kube-proxy\'s mode, nftables or iptables (default: the scenario\'s)')
    .action(async (opts) => {
      if (opts.real) {
        const { runRealUp } = await import('../lab/real/cli.js');
        setExit(await runRealUp(opts));
        return;
      }
      if (opts.proxyMode !== undefined) throw new InputError('--proxy-mode needs --real (a fast-lab scenario has its own mode)');
      const { runLabUp } = await import('../lab/cli.js');
      setExit(await runLabUp(opts));
    });
  lab.command('down')
    .description('remove every namespace, rule, cgroup and process a lab left behind (fast and real labs)')
    .option('--real', 'only the real labs')
    .action(async (opts) => {
      if (opts.real) {
        const { runRealDown } = await import('../lab/real/cli.js');
        setExit(runRealDown());
        return;
      }
      const { runLabDown } = await import('../lab/cli.js');
      setExit(await runLabDown());
    });
  lab.command('build')
    .description('build (once per machine, cached) what the lab needs: --real builds Kubernetes from the Go module proxy')
    .option('--real', 'the real node: Kubernetes binaries, containerd, the lab app')
    .option('--force', 'rebuild even when cached')
    .action(async (opts) => {
      if (!opts.real) { process.stdout.write('the fast lab needs no build; use `rolltrace lab build --real` for the real node\n'); return; }
      const { runRealBuild } = await import('../lab/real/cli.js');
      setExit(await runRealBuild(opts));
    });

  program.command('demo')
    .description('record the race scenario in the lab and print its analysis')
    .option('--out <file>', 'bundle to write', 'rolltrace-demo.rtb')
    .action(async (opts) => {
      const { runDemo } = await import('./demo.js');
      setExit(await runDemo(opts));
    });

  return program;
}

/**
 * A reader that goes away (`rolltrace analyze B | head`) closes our stdout/stderr: EPIPE. Like tcpdump
 * on SIGPIPE, a command whose job is its output stops quietly; `record` and `lab` (which hold data being
 * recorded) keep going and finish their bundle, their further output dropped. Never a stack trace.
 */
let pipeCommand: string | null = null;
function quietOnClosedPipe(argv: string[]): void {
  // main() runs once per process, except in-process callers (the fuzz runner): one listener each
  const first = pipeCommand === null;
  pipeCommand = operands(argv)[0] ?? '';
  if (!first) return;
  for (const s of [process.stdout, process.stderr]) {
    // any write error of our own output (EPIPE, or EIO once the terminal is gone): never a stack trace, and a
    // recording is never lost to it; other commands stop, with exit 2 unless the reader merely went away
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (['record', 'lab'].includes(pipeCommand ?? '')) return;
      process.exit(e.code === 'EPIPE' ? process.exitCode ?? 0 : 2);
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  let code = 0;
  quietOnClosedPipe(argv);
  const program = buildProgram((c) => { code = c; });
  try {
    await program.parseAsync(argv);
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      // commander already printed its one-line message
      return 2;
    }
    if (isInputError(e)) {
      process.stderr.write(`rolltrace: ${oneLine((e as Error).message)}\n`);
      return 2;
    }
    // a bug met on (hostile) input: still one line and exit 2 for the user, naming what was being
    // read; the stack only with ROLLTRACE_DEBUG=1. Tests treat "internal error" as a failure.
    if (process.env.ROLLTRACE_DEBUG) throw e;
    const what = operands(argv).join(' ');
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    process.stderr.write(`rolltrace: ${oneLine(`${what ? `${what}: ` : ''}internal error (${msg}); please report it, ROLLTRACE_DEBUG=1 shows the stack`)}\n`);
    return 2;
  }
}

/** The command and the files it names (argv without node, the script and option values' flags), for an error line. */
function operands(argv: string[]): string[] {
  const out: string[] = [];
  for (const a of argv.slice(2)) if (!a.startsWith('-')) out.push(a);
  return out.slice(0, 4);
}

export function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ').replace(/[\u0000-\u001f\u007f]/g, '?').slice(0, 500);
}

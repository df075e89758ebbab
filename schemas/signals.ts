/** Linux signal numbers and names (x86-64/arm64 numbering), shared by the sources that see signals and the analyzer. */
export const SIGNALS: Readonly<Record<string, number>> = {
  SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGILL: 4, SIGTRAP: 5, SIGABRT: 6, SIGBUS: 7, SIGFPE: 8, SIGKILL: 9, SIGUSR1: 10,
  SIGSEGV: 11, SIGUSR2: 12, SIGPIPE: 13, SIGALRM: 14, SIGTERM: 15, SIGSTKFLT: 16, SIGCHLD: 17, SIGCONT: 18, SIGSTOP: 19,
  SIGTSTP: 20, SIGTTIN: 21, SIGTTOU: 22, SIGURG: 23, SIGXCPU: 24, SIGXFSZ: 25, SIGVTALRM: 26, SIGPROF: 27, SIGWINCH: 28,
  SIGIO: 29, SIGPWR: 30, SIGSYS: 31,
};
const NAMES: Record<number, string> = Object.fromEntries(Object.entries(SIGNALS).map(([k, v]) => [v, k]));

/** SIGTERM -> 15; real-time signals -> 34; unknown -> 0 */
export function signo(name: string): number { return SIGNALS[name] ?? (/^SIGRT/.test(name) ? 34 : 0); }

/** 15 -> SIGTERM; 34..64 -> SIGRTMIN+n; unknown -> SIG<n> */
export function signame(n: number): string {
  return NAMES[n] ?? (n >= 34 && n <= 64 ? (n === 34 ? 'SIGRTMIN' : `SIGRTMIN+${n - 34}`) : `SIG${n}`);
}

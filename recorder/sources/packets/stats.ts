/** Pure parser of tcpdump's statistics lines (printed at exit and on SIGUSR1). */
export interface TcpdumpStats { captured: number | null; received: number | null; droppedKernel: number | null; droppedIface: number | null }

export function parseTcpdumpStats(text: string): TcpdumpStats {
  const last = (re: RegExp): number | null => {
    let v: number | null = null;
    for (const m of text.matchAll(re)) v = Number(m[1]);
    return v;
  };
  return {
    captured: last(/(?:^|tcpdump: |, )(\d+) packets? captured/gm),
    received: last(/(?:^|tcpdump: |, )(\d+) packets? received by filter/gm),
    droppedKernel: last(/(?:^|tcpdump: |, )(\d+) packets? dropped by kernel/gm),
    droppedIface: last(/(?:^|tcpdump: |, )(\d+) packets? dropped by interface/gm),
  };
}

/** CNI bridges in the order we prefer them. */
export const CNI_BRIDGES = ['cni0', 'cbr0', 'cni-podman0', 'kube-bridge', 'weave', 'docker0'];

/** pcap LINKTYPE number for the names `cap` returns from open(). */
export function linktypeFromName(name: string): number {
  const n = name.replace(/^(LINKTYPE|DLT)_/, '');
  const t: Record<string, number> = { NULL: 0, ETHERNET: 1, EN10MB: 1, RAW: 101, LINUX_SLL: 113, LINUX_SLL2: 276, IPV4: 228, IPV6: 229 };
  return t[n] ?? -1;
}

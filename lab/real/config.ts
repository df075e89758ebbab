/**
 * Configuration files of the real node, as pure functions of the lab's layout (tested in
 * test/lab-real-config.test.ts): containerd's config.toml, the CNI network, the KubeletConfiguration,
 * the KubeProxyConfiguration and kubeconfigs with client certificates. kubelet and kube-proxy read YAML,
 * and JSON is YAML: their files are written as JSON.
 */
import { join } from 'node:path';
import { InputError } from '../../schemas/errors.js';

/** Where one real lab keeps its things. `state` is on tmpfs (/run), `data` on disk (containerd's snapshots). */
export interface RealLayout {
  prefix: string;
  /** /run/rolltrace-real/<prefix>: resources file, sockets, etcd, containerd state, pki, configs, logs */
  state: string;
  /** /var/lib/rolltrace-real/<prefix>: containerd root, kubelet root, pod logs */
  data: string;
}

export const REAL_STATE_ROOT = '/run/rolltrace-real';
export const REAL_DATA_ROOT = '/var/lib/rolltrace-real';

export function realLayout(prefix: string): RealLayout {
  return { prefix, state: join(REAL_STATE_ROOT, prefix), data: join(REAL_DATA_ROOT, prefix) };
}

export const paths = (l: RealLayout) => ({
  resources: join(l.state, 'resources'),
  pki: join(l.state, 'pki'),
  logs: join(l.state, 'logs'),
  etcdData: join(l.state, 'etcd'),
  containerdConfig: join(l.state, 'containerd.toml'),
  containerdSock: join(l.state, 'containerd.sock'),
  containerdState: join(l.state, 'containerd'),
  containerdRoot: join(l.data, 'containerd'),
  runcRoot: join(l.state, 'runc'),
  cniConfDir: join(l.state, 'cni'),
  cniDataDir: join(l.state, 'cni-ipam'),
  kubeletRoot: join(l.data, 'kubelet'),
  kubeletConfig: join(l.state, 'kubelet.json'),
  podLogs: join(l.data, 'pods'),
  kubeProxyConfig: join(l.state, 'kube-proxy.json'),
  /** kubeconfig for everything inside the node netns (https://127.0.0.1:6443) */
  kubeconfigNode: join(l.state, 'kubeconfig.node'),
  /** kubeconfig for the host, through the relay */
  kubeconfigHost: join(l.state, 'kubeconfig'),
  apiSock: join(l.state, 'apiserver.sock'),
  resolvConf: join(l.state, 'resolv.conf'),
  images: join(l.state, 'images'),
});

/** Addresses of the node. The node netns has eth0 (linked to the client netns) and, once pods run, cni0. */
export const NET = {
  nodeIp: '192.168.77.1',
  clientIp: '192.168.77.2',
  podSubnet: '10.244.0.0/24',
  podGateway: '10.244.0.1',
  clusterCIDR: '10.244.0.0/16',
  serviceCIDR: '10.96.0.0/16',
  apiServiceIp: '10.96.0.1',
  apiPort: 6443,
  etcdPort: 2379,
} as const;

/** The sandbox ("pause") image the CRI plugin uses: an image the lab builds and imports, never pulled. */
export const PAUSE_IMAGE = 'registry.k8s.io/pause:3.10';
export const APP_IMAGE = 'rolltrace.local/app:v1';

const q = (s: string) => JSON.stringify(s); // a TOML basic string is a JSON string

export function containerdToml(l: RealLayout, opts: { cniBinDir?: string; runc?: string } = {}): string {
  const p = paths(l);
  const cri = 'plugins."io.containerd.grpc.v1.cri"';
  return [
    'version = 2',
    `root = ${q(p.containerdRoot)}`,
    `state = ${q(p.containerdState)}`,
    // what cannot load here anyway (no btrfs/zfs/devmapper/aufs); the tracing plugins want an endpoint
    'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
    '',
    '[grpc]',
    `  address = ${q(p.containerdSock)}`,
    '[ttrpc]',
    `  address = ${q(p.containerdSock + '.ttrpc')}`,
    '[metrics]',
    '  address = ""',
    '',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${q(join(p.containerdRoot, 'opt'))}`,
    `[${cri}]`,
    `  sandbox_image = ${q(PAUSE_IMAGE)}`,
    // the VM lacks CAP_SYS_RESOURCE: containerd must not lower a container's oom_score_adj below its own
    '  restrict_oom_score_adj = true',
    // pod netns under the lab's state dir, not /var/run/netns (where `ip netns list` and other labs look)
    '  netns_mounts_under_state_dir = true',
    '  disable_apparmor = true',
    '  enable_selinux = false',
    '  max_container_log_line_size = 16384',
    `  [${cri}.containerd]`,
    '    snapshotter = "overlayfs"',
    '    default_runtime_name = "runc"',
    '    discard_unpacked_layers = false',
    `    [${cri}.containerd.runtimes.runc]`,
    '      runtime_type = "io.containerd.runc.v2"',
    `      [${cri}.containerd.runtimes.runc.options]`,
    '        SystemdCgroup = false',
    `        BinaryName = ${q(opts.runc ?? '/usr/sbin/runc')}`,
    `        Root = ${q(p.runcRoot)}`,
    `  [${cri}.cni]`,
    `    bin_dir = ${q(opts.cniBinDir ?? '/usr/lib/cni')}`,
    `    conf_dir = ${q(p.cniConfDir)}`,
    '    max_conf_num = 1',
    '',
  ].join('\n');
}

/** bridge + host-local: cni0 in the node netns, pods in 10.244.0.0/24; IP allocations kept under the lab. */
export function cniConflist(l: RealLayout): string {
  return JSON.stringify({
    cniVersion: '1.0.0',
    name: 'rolltrace-lab',
    plugins: [{
      type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false, hairpinMode: true,
      ipam: { type: 'host-local', ranges: [[{ subnet: NET.podSubnet, gateway: NET.podGateway }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: paths(l).cniDataDir },
    }],
  }, null, 2) + '\n';
}

export const NODE_NAME = 'lab-node';

/** The sysctls kubelet sets at start (protectKernelDefaults: false): saved before and put back at `lab down`. */
export const KUBELET_SYSCTLS = ['vm/overcommit_memory', 'vm/panic_on_oom', 'kernel/panic', 'kernel/panic_on_oops', 'kernel/keys/root_maxkeys', 'kernel/keys/root_maxbytes'] as const;

export function kubeletConfig(l: RealLayout): Record<string, unknown> {
  const p = paths(l);
  return {
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    // these VMs run cgroup v1 (hybrid): 1.33 still starts there when told to
    cgroupDriver: 'cgroupfs',
    failCgroupV1: false,
    // everything of this lab under /<prefix> in every hierarchy: `lab down` removes that one subtree
    cgroupRoot: `/${l.prefix}`,
    cgroupsPerQOS: true,
    enforceNodeAllocatable: ['pods'],
    failSwapOn: false,
    containerRuntimeEndpoint: `unix://${p.containerdSock}`,
    // no registry: an image that is collected can never come back
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'nodefs.inodesFree': '1%', 'imagefs.available': '1%' },
    podLogsDir: p.podLogs,
    resolvConf: p.resolvConf,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: join(p.pki, 'ca.crt') } },
    authorization: { mode: 'AlwaysAllow' },
    address: NET.nodeIp,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    tlsCertFile: join(p.pki, 'kubelet.crt'),
    tlsPrivateKeyFile: join(p.pki, 'kubelet.key'),
    serializeImagePulls: false,
    nodeStatusUpdateFrequency: '4s',
    syncFrequency: '10s',
    fileCheckFrequency: '20s',
    protectKernelDefaults: false,
    // pods are few and short-lived; the default 110 is fine, keep the lab's node small
    maxPods: 30,
  };
}

export function kubeletArgs(l: RealLayout, logLevel = 2): string[] {
  const p = paths(l);
  return ['--config', p.kubeletConfig, '--kubeconfig', p.kubeconfigNode, '--root-dir', p.kubeletRoot, '--cert-dir', join(p.kubeletRoot, 'pki'),
    '--hostname-override', NODE_NAME, '--node-ip', NET.nodeIp, `--v=${logLevel}`,
    // the truth reads the kubelet's own records: preStop start/end are logged at 3
    '--vmodule=kuberuntime_container=3'];
}

export type ProxyMode = 'nftables' | 'iptables';
export const PROXY_MODES: readonly ProxyMode[] = ['nftables', 'iptables'];

/** `--proxy-mode`: undefined (the scenario's own mode) or one of PROXY_MODES; anything else is a one-line input error. */
export function parseProxyMode(v: unknown): ProxyMode | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string' && (PROXY_MODES as readonly string[]).includes(v)) return v as ProxyMode;
  throw new InputError(`--proxy-mode ${JSON.stringify(v)}: one of ${PROXY_MODES.join(', ')}`);
}

export function kubeProxyConfig(l: RealLayout, mode: ProxyMode): Record<string, unknown> {
  const sync = { syncPeriod: '30s', minSyncPeriod: '1s' };
  return {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    mode,
    clientConnection: { kubeconfig: paths(l).kubeconfigNode },
    hostnameOverride: NODE_NAME,
    clusterCIDR: NET.clusterCIDR,
    // conntrack: leave the machine's (global) table size and timeouts alone
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: '0s', tcpCloseWaitTimeout: '0s' },
    metricsBindAddress: '127.0.0.1:10249',
    healthzBindAddress: '127.0.0.1:10256',
    nftables: sync,
    iptables: { ...sync, masqueradeAll: false },
  };
}

export function kubeProxyArgs(l: RealLayout, logLevel = 4): string[] {
  // -v=4: the endpoints of every sync; proxier=9: the nftables transaction / iptables-restore input of
  // every sync (what the truth reads to know which sync stopped routing to an endpoint)
  return ['--config', paths(l).kubeProxyConfig, `--v=${logLevel}`, '--vmodule=proxier=9'];
}

export function etcdArgs(l: RealLayout): string[] {
  const url = `http://127.0.0.1:${NET.etcdPort}`;
  return ['--name', 'lab', '--data-dir', paths(l).etcdData, '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
    '--initial-cluster', 'lab=http://127.0.0.1:2380', '--log-level', 'warn', '--logger', 'zap'];
}

export function apiserverArgs(l: RealLayout): string[] {
  const k = paths(l).pki;
  return ['--etcd-servers', `http://127.0.0.1:${NET.etcdPort}`, '--bind-address', '0.0.0.0', '--advertise-address', NET.nodeIp,
    '--secure-port', String(NET.apiPort), '--tls-cert-file', join(k, 'apiserver.crt'), '--tls-private-key-file', join(k, 'apiserver.key'),
    '--client-ca-file', join(k, 'ca.crt'), '--kubelet-client-certificate', join(k, 'admin.crt'), '--kubelet-client-key', join(k, 'admin.key'),
    '--kubelet-certificate-authority', join(k, 'ca.crt'),
    // logs, exec, cp and port-forward reach the kubelet at the node's InternalIP (its hostname lab-node
    // resolves nowhere: the lab has no DNS)
    '--kubelet-preferred-address-types', 'InternalIP,Hostname',
    '--service-account-issuer', 'https://kubernetes.default.svc', '--service-account-key-file', join(k, 'sa.pub'),
    '--service-account-signing-key-file', join(k, 'sa.key'), '--service-cluster-ip-range', NET.serviceCIDR,
    '--authorization-mode', 'Node,RBAC', '--allow-privileged=true', '--enable-priority-and-fairness=false', '--v=1'];
}

export function controllerManagerArgs(l: RealLayout): string[] {
  const k = paths(l).pki;
  return ['--kubeconfig', paths(l).kubeconfigNode, '--bind-address', '127.0.0.1', '--leader-elect=false',
    '--service-account-private-key-file', join(k, 'sa.key'), '--root-ca-file', join(k, 'ca.crt'),
    '--cluster-signing-cert-file', join(k, 'ca.crt'), '--cluster-signing-key-file', join(k, 'ca.key'),
    '--use-service-account-credentials=false', '--allocate-node-cidrs=false', '--controllers=*', '--v=1'];
}

export function schedulerArgs(l: RealLayout): string[] {
  return ['--kubeconfig', paths(l).kubeconfigNode, '--bind-address', '127.0.0.1', '--leader-elect=false', '--v=1'];
}

/** A kubeconfig with the CA and a client certificate embedded (PEM text in, base64 out). */
export function certKubeconfig(server: string, caPem: string, certPem: string, keyPem: string, name = 'rolltrace-real'): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return [
    'apiVersion: v1', 'kind: Config', 'preferences: {}',
    'clusters:', `- name: ${name}`, '  cluster:', `    server: ${q(server)}`, `    certificate-authority-data: ${b64(caPem)}`,
    'users:', `- name: ${name}`, '  user:', `    client-certificate-data: ${b64(certPem)}`, `    client-key-data: ${b64(keyPem)}`,
    'contexts:', `- name: ${name}`, '  context:', `    cluster: ${name}`, `    user: ${name}`, '    namespace: default',
    `current-context: ${name}`, '',
  ].join('\n');
}

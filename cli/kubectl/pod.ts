/**
 * The recorder pod `kubectl rolltrace` starts on one node (pure; test/kubectl-plugin-args.test.ts): the
 * DaemonSet's pod (deploy/daemonset.yaml) pinned to the node with spec.nodeName, restartPolicy Never.
 * A shell wraps `rolltrace record`: it keeps the recorder's PID for the stop (`kill -INT` through exec),
 * says "bundle ready" with the size once the bundle is closed, and then waits for the copy; SIGTERM
 * (pod deletion) stops the recorder first, so a bundle is always closed cleanly on the node.
 */

export const CONTAINER = 'recorder';
export const BUNDLE_DIR = '/var/lib/rolltrace/kubectl-rolltrace';
export const PID_FILE = '/tmp/rolltrace-recorder.pid';
export const SESSION_LABEL = 'rolltrace.dev/session';
/** what the recorder prints once every source runs (recorder/record.ts) */
export const RECORDING_RE = /^recording[ ;]/m;
export const READY_RE = /^rolltrace: bundle ready: (\S+) (\d+) bytes \(record exit (\d+)\)$/m;

export interface RecorderPodSpec {
  name: string;
  namespace: string;
  session: string;
  node: string;
  image: string;
  pullPolicy: 'Never' | 'IfNotPresent' | 'Always';
  serviceAccount: string;
  watchNamespace: string;
  deployment: string;
  probeUrl: string | null;
  rate: number;
  bundle: string;
}

export const SCRIPT = [
  'out="$BUNDLE"; mkdir -p "$(dirname "$out")"; rm -f "$out" "$out-wal" "$out-shm"',
  'set --; [ -n "$PROBE_URL" ] && set -- --probe "$PROBE_URL" --rate "$PROBE_RATE"',
  'rolltrace record --out "$out" --namespace "$WATCH_NAMESPACE" --deployment "$DEPLOYMENT" --quiet "$@" & pid=$!',
  `echo $pid > ${PID_FILE}`,
  'stop=; spid=; trap \'stop=1; kill -INT $pid 2>/dev/null; [ -n "$spid" ] && kill $spid 2>/dev/null\' TERM INT',
  'wait $pid; rc=$?; while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done',
  'size=$(stat -c %s "$out" 2>/dev/null || echo 0)',
  'echo "rolltrace: bundle ready: $out $size bytes (record exit $rc)"',
  '[ -n "$stop" ] && exit $rc',
  'sleep 3600 & spid=$!; wait $spid; exit $rc',
].join('\n');

export function recorderPod(s: RecorderPodSpec): Record<string, unknown> {
  const hostPath = (name: string, path: string, type?: string) => ({ name, hostPath: { path, ...(type ? { type } : {}) } });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: s.name,
      namespace: s.namespace,
      labels: { 'app.kubernetes.io/name': 'rolltrace', 'app.kubernetes.io/component': 'kubectl-record', [SESSION_LABEL]: s.session },
      annotations: { 'rolltrace.dev/records': `${s.watchNamespace}/deploy/${s.deployment}` },
    },
    spec: {
      nodeName: s.node,
      restartPolicy: 'Never',
      serviceAccountName: s.serviceAccount,
      hostNetwork: true,
      hostPID: true,
      dnsPolicy: 'ClusterFirstWithHostNet',
      tolerations: [{ operator: 'Exists' }],
      terminationGracePeriodSeconds: 30,
      containers: [{
        name: CONTAINER,
        image: s.image,
        imagePullPolicy: s.pullPolicy,
        command: ['/bin/sh', '-c', SCRIPT],
        env: [
          { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
          { name: 'WATCH_NAMESPACE', value: s.watchNamespace },
          { name: 'DEPLOYMENT', value: s.deployment },
          { name: 'BUNDLE', value: s.bundle },
          { name: 'PROBE_URL', value: s.probeUrl ?? '' },
          { name: 'PROBE_RATE', value: String(s.rate) },
        ],
        securityContext: { privileged: true },
        resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
        volumeMounts: [
          { name: 'bundles', mountPath: '/var/lib/rolltrace' },
          { name: 'tracefs', mountPath: '/sys/kernel/tracing' },
          { name: 'debugfs', mountPath: '/sys/kernel/debug' },
          { name: 'cgroup', mountPath: '/sys/fs/cgroup', readOnly: true },
          { name: 'modules', mountPath: '/lib/modules', readOnly: true },
        ],
      }],
      volumes: [
        hostPath('bundles', '/var/lib/rolltrace', 'DirectoryOrCreate'),
        hostPath('tracefs', '/sys/kernel/tracing'),
        hostPath('debugfs', '/sys/kernel/debug'),
        hostPath('cgroup', '/sys/fs/cgroup'),
        hostPath('modules', '/lib/modules'),
      ],
    },
  };
}

/** The probe target for --probe auto: the first Service whose selector picks the Deployment's pod labels. */
export function serviceProbeUrl(services: Array<{ metadata?: { name?: string }; spec?: { type?: string; clusterIP?: string; selector?: Record<string, string>; ports?: Array<{ port: number; protocol?: string }> } }>,
  podLabels: Record<string, string>): { url: string; service: string } | null {
  for (const s of services) {
    const sel = s.spec?.selector ?? {};
    const ip = s.spec?.clusterIP;
    const port = s.spec?.ports?.find((p) => (p.protocol ?? 'TCP') === 'TCP');
    if (!Object.keys(sel).length || !ip || ip === 'None' || s.spec?.type === 'ExternalName' || !port) continue;
    if (!Object.entries(sel).every(([k, v]) => podLabels[k] === v)) continue;
    const host = ip.includes(':') ? `[${ip}]` : ip;
    return { url: `http://${host}:${port.port}/`, service: s.metadata?.name ?? '?' };
  }
  return null;
}

/** Where deploy/daemonset.yaml and deploy/job.yaml leave their bundles on the node. */
export const NODE_BUNDLES = '/var/lib/rolltrace';

/** `kubectl rolltrace collect`'s pod: the image's shell with the node's bundle directory, nothing else. */
export function collectorPod(s: Pick<RecorderPodSpec, 'name' | 'namespace' | 'session' | 'node' | 'image' | 'pullPolicy' | 'serviceAccount'>): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: s.name, namespace: s.namespace, labels: { 'app.kubernetes.io/name': 'rolltrace', 'app.kubernetes.io/component': 'kubectl-collect', [SESSION_LABEL]: s.session } },
    spec: {
      nodeName: s.node,
      restartPolicy: 'Never',
      serviceAccountName: s.serviceAccount,
      automountServiceAccountToken: false,
      tolerations: [{ operator: 'Exists' }],
      terminationGracePeriodSeconds: 5,
      containers: [{
        name: CONTAINER, image: s.image, imagePullPolicy: s.pullPolicy,
        command: ['/bin/sh', '-c', 'trap "exit 0" TERM; echo "collector ready"; sleep 600 & wait $!'],
        volumeMounts: [{ name: 'bundles', mountPath: NODE_BUNDLES }],
      }],
      volumes: [{ name: 'bundles', hostPath: { path: NODE_BUNDLES, type: 'DirectoryOrCreate' } }],
    },
  };
}

/** `stat -c '%s %n'` lines of the node's bundles -> the newest closed one (no -wal beside it), and the open ones. */
export function pickBundle(listing: string): { newest: { path: string; size: number } | null; open: string[] } {
  const rows = listing.split('\n').map((l) => /^(\d+) (\d+) (\S+)$/.exec(l.trim())).filter((m): m is RegExpExecArray => !!m)
    .map((m) => ({ size: Number(m[1]), mtime: Number(m[2]), path: m[3]! }));
  const wal = new Set(rows.filter((r) => r.path.endsWith('.rtb-wal')).map((r) => r.path.slice(0, -4)));
  const closed = rows.filter((r) => r.path.endsWith('.rtb') && !wal.has(r.path) && r.size > 0).sort((a, b) => b.mtime - a.mtime || a.path.localeCompare(b.path));
  return { newest: closed[0] ? { path: closed[0].path, size: closed[0].size } : null, open: [...wal] };
}

/**
 * The lab's control plane: the API server (real Kubernetes HTTP protocol) plus the scheduler,
 * Deployment, ReplicaSet and EndpointSlice controllers running in-process against its store. The
 * node side (kubelet, kube-proxy) and the recorder talk to it over HTTP only.
 */
import { startApiServer, type Faults } from './apiserver/server.js';
import { Store } from './apiserver/store.js';
import type { Obj } from './apiserver/util.js';
import { startControllers } from './controllers/index.js';
import { writeKubeconfig } from './kubeconfig.js';

export type { Faults } from './apiserver/server.js';
export type { Store, Change } from './apiserver/store.js';
export type { Obj as KubeObject } from './apiserver/util.js';
export { rolloutComplete } from './controllers/deployment.js';

export interface ControlPlaneOptions {
  host?: string;
  port?: number;
  nodeName: string;
  /** written when given (a kubeconfig for this server) */
  kubeconfigPath?: string;
  /** namespace of the kubeconfig's context */
  namespace?: string;
  /** EndpointSlice update delay/batching window after pod changes (default 30 ms) */
  endpointDelayMs?: number;
  /** the node's InternalIP in its Node object */
  nodeIP?: string;
  /** ClusterIP allocation range for Services created without one (default 10.96.0.0/16) */
  serviceCIDR?: string;
  /** BOOKMARK interval on watches that allow them (default 5000 ms) */
  bookmarkIntervalMs?: number;
  /** kubelet-style Killing events from the control plane (default true) */
  killingEvents?: boolean;
}

export interface ControlPlane {
  url: string;
  kubeconfigPath?: string;
  store: Store;
  faults: Faults;
  stop(): Promise<void>;
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const store = new Store({ nodeName: opts.nodeName, nodeIP: opts.nodeIP, serviceCIDR: opts.serviceCIDR });
  const api = await startApiServer(store, { host: opts.host, port: opts.port, bookmarkIntervalMs: opts.bookmarkIntervalMs });
  const controllers = startControllers(store, { nodeName: opts.nodeName, endpointDelayMs: opts.endpointDelayMs, killingEvents: opts.killingEvents });
  if (opts.kubeconfigPath) writeKubeconfig(opts.kubeconfigPath, api.url, { namespace: opts.namespace });
  let stopped = false;
  return {
    url: api.url,
    kubeconfigPath: opts.kubeconfigPath,
    store,
    faults: api.faults,
    async stop() {
      if (stopped) return;
      stopped = true;
      controllers.stop();
      await api.close();
    },
  };
}

export interface ReadinessProbeSpec {
  path: string;
  port: number;
  periodSeconds?: number;
  initialDelaySeconds?: number;
  timeoutSeconds?: number;
  successThreshold?: number;
  failureThreshold?: number;
}

export interface DeploymentSpec {
  name: string;
  namespace?: string;
  replicas: number;
  /** pod labels; also the selector */
  labels: Record<string, string>;
  image?: string;
  /** container port */
  port: number;
  readinessProbe?: ReadinessProbeSpec;
  preStopSleepSeconds?: number;
  terminationGracePeriodSeconds?: number;
  maxSurge?: number | string;
  maxUnavailable?: number | string;
  env?: Record<string, string> | { name: string; value: string }[];
  command?: string[];
  args?: string[];
  minReadySeconds?: number;
  /** extra pod template annotations */
  annotations?: Record<string, string>;
}

/** An apps/v1 Deployment to POST, with one container named "app". */
export function makeDeployment(s: DeploymentSpec): Obj {
  const env = Array.isArray(s.env) ? s.env : Object.entries(s.env ?? {}).map(([name, value]) => ({ name, value }));
  const container: Obj = {
    name: 'app',
    image: s.image ?? 'rolltrace-lab/backend:1',
    ports: [{ name: 'http', containerPort: s.port, protocol: 'TCP' }],
    ...(s.command ? { command: s.command } : {}),
    ...(s.args ? { args: s.args } : {}),
    ...(env.length ? { env } : {}),
  };
  if (s.readinessProbe) {
    const r = s.readinessProbe;
    container.readinessProbe = {
      httpGet: { path: r.path, port: r.port, scheme: 'HTTP' },
      periodSeconds: r.periodSeconds ?? 1,
      ...(r.initialDelaySeconds !== undefined ? { initialDelaySeconds: r.initialDelaySeconds } : {}),
      timeoutSeconds: r.timeoutSeconds ?? 1,
      successThreshold: r.successThreshold ?? 1,
      failureThreshold: r.failureThreshold ?? 1,
    };
  }
  if (s.preStopSleepSeconds !== undefined && s.preStopSleepSeconds > 0) {
    // the sleep action (KEP-3960) keeps the lab free of a shell inside the "container"
    container.lifecycle = { preStop: { sleep: { seconds: s.preStopSleepSeconds } } };
  }
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: s.name, namespace: s.namespace ?? 'default', labels: { ...s.labels } },
    spec: {
      replicas: s.replicas,
      selector: { matchLabels: { ...s.labels } },
      ...(s.minReadySeconds !== undefined ? { minReadySeconds: s.minReadySeconds } : {}),
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: s.maxSurge ?? '25%', maxUnavailable: s.maxUnavailable ?? '25%' } },
      template: {
        metadata: { labels: { ...s.labels }, ...(s.annotations ? { annotations: { ...s.annotations } } : {}) },
        spec: {
          containers: [container],
          ...(s.terminationGracePeriodSeconds !== undefined ? { terminationGracePeriodSeconds: s.terminationGracePeriodSeconds } : {}),
        },
      },
    },
  };
}

export interface ServiceSpec {
  name: string;
  namespace?: string;
  clusterIP?: string;
  port: number;
  targetPort: number | string;
  selector: Record<string, string>;
  type?: 'ClusterIP' | 'NodePort';
  nodePort?: number;
  externalTrafficPolicy?: 'Cluster' | 'Local';
  portName?: string;
}

/** A core/v1 Service to POST with one TCP port. */
export function makeService(s: ServiceSpec): Obj {
  const type = s.type ?? 'ClusterIP';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: s.name, namespace: s.namespace ?? 'default' },
    spec: {
      type,
      ...(s.clusterIP ? { clusterIP: s.clusterIP } : {}),
      selector: { ...s.selector },
      ports: [{ name: s.portName ?? 'http', protocol: 'TCP', port: s.port, targetPort: s.targetPort, ...(type === 'NodePort' && s.nodePort ? { nodePort: s.nodePort } : {}) }],
      ...(type === 'NodePort' ? { externalTrafficPolicy: s.externalTrafficPolicy ?? 'Cluster' } : {}),
    },
  };
}

/**
 * The lab's scenarios (issue 3). Each is a 2-replica (unless said) Deployment `web` behind Service
 * `web` (VIP 10.96.0.10:80 -> 8080), rolled with `rolltrace record --restart`.
 * Timing: the endpoint controller writes the slice endpointDelayMs after the pod changes, kube-proxy
 * syncs syncDelayMs after it sees the slice: rules lag SIGTERM by about their sum.
 */
export interface Scenario {
  name: string;
  description: string;
  mode: 'nftables' | 'iptables';
  replicas: number;
  maxSurge: number;
  maxUnavailable: number;
  /** backend args (lab/backend/server.mjs) */
  backendArgs: string[];
  readinessProbe: boolean;
  preStopSleepSeconds?: number;
  terminationGracePeriodSeconds: number;
  endpointDelayMs: number;
  syncDelayMs: number;
  minSyncPeriodMs: number;
  serviceType: 'ClusterIP' | 'NodePort';
  externalTrafficPolicy: 'Cluster' | 'Local';
  nodePort: number | null;
  /** a client namespace sending to the NodePort (lab/backend/client.mjs) */
  client: boolean;
  /** the lab's own slow requests to the VIP (besides the recorder's probe) */
  slowTraffic?: { path: string; intervalMs: number; timeoutMs: number };
  /**
   * a second node (lab/node/netns.ts createSecondNode) with its own kube-proxy-shaped rules, syncing this
   * much later than the first node's, and a client pod there sending to the VIP every intervalMs: its
   * connections reach the first node's pods already DNATed. Both nodes are recorded (the second bundle is
   * written beside --out as NAME-node2.rtb).
   */
  secondNode?: { syncDelayMs: number; intervalMs: number };
  /** what a correct analysis concludes */
  expect: { failures: 'some' | 'none'; cause: 'listener-closed' | 'no-endpoint' | 'killed-in-flight' | 'not-ready' | null; verdict: 'listener-closed-before-rule-removed' | 'safe' | 'unknown' | 'ignored-sigterm' };
}

const base: Omit<Scenario, 'name' | 'description' | 'expect'> = {
  mode: 'nftables', replicas: 2, maxSurge: 1, maxUnavailable: 0,
  backendArgs: ['--shutdown', 'close'], readinessProbe: true, terminationGracePeriodSeconds: 30,
  endpointDelayMs: 50, syncDelayMs: 650, minSyncPeriodMs: 0,
  serviceType: 'ClusterIP', externalTrafficPolicy: 'Cluster', nodePort: null, client: false,
};

export const SCENARIOS: Record<string, Scenario> = {
  race: { ...base, name: 'race', description: 'the original report: listener closes at SIGTERM, rules lag ~700 ms',
    expect: { failures: 'some', cause: 'listener-closed', verdict: 'listener-closed-before-rule-removed' } },
  prestop: { ...base, name: 'prestop', description: 'the fix: preStop sleep 2 s outlasts the rule lag; zero failures',
    preStopSleepSeconds: 2, expect: { failures: 'none', cause: null, verdict: 'safe' } },
  iptables: { ...base, name: 'iptables', mode: 'iptables', description: 'the race under iptables-mode rules (iptables-nft)',
    expect: { failures: 'some', cause: 'listener-closed', verdict: 'listener-closed-before-rule-removed' } },
  'local-blackhole': { ...base, name: 'local-blackhole', replicas: 1, maxSurge: 0, maxUnavailable: 1,
    description: 'externalTrafficPolicy: Local NodePort from a client namespace; the node\'s last endpoint terminates',
    serviceType: 'NodePort', externalTrafficPolicy: 'Local', nodePort: 30080, client: true, backendArgs: ['--shutdown', 'close', '--start-delay-ms', '2000'],
    expect: { failures: 'some', cause: 'no-endpoint', verdict: 'unknown' } },
  'grace-too-short': { ...base, name: 'grace-too-short', terminationGracePeriodSeconds: 2,
    description: 'slow drain (5 s) with 2 s grace: SIGKILL cuts the lab\'s slow (3 s) requests in flight',
    backendArgs: ['--shutdown', 'drain', '--drain-ms', '5000'],
    slowTraffic: { path: '/?work=3000', intervalMs: 300, timeoutMs: 10000 },
    // still serving when SIGKILLed: from outside, a drain longer than the grace period is an ignored SIGTERM
    expect: { failures: 'some', cause: 'killed-in-flight', verdict: 'ignored-sigterm' } },
  'not-ready': { ...base, name: 'not-ready', readinessProbe: false,
    description: 'no readiness probe and a 3 s slow start: new pods are routed to before they listen',
    backendArgs: ['--shutdown', 'drain', '--drain-ms', '1500', '--start-delay-ms', '3000'],
    expect: { failures: 'some', cause: 'not-ready', verdict: 'safe' } },
  'two-node': { ...base, name: 'two-node', description: 'the race seen from two nodes: a client pod on node 2, whose rules lag ~1.2 s, reaches node 1\'s closed pods already DNATed',
    secondNode: { syncDelayMs: 1150, intervalMs: 50 },
    expect: { failures: 'some', cause: 'listener-closed', verdict: 'listener-closed-before-rule-removed' } },
};

export const NODE2_NAME = 'lab-node2';

/** Where the second node's bundle goes: beside --out. */
export function node2Out(out: string): string { return out.replace(/(\.rtb)?$/, '-node2.rtb'); }

export const VIP = '10.96.0.10';
export const SERVICE_PORT = 80;
export const BACKEND_PORT = 8080;
export const NODE_NAME = 'lab-node';

export function getScenario(name: string): Scenario | undefined {
  return Object.prototype.hasOwnProperty.call(SCENARIOS, name) ? SCENARIOS[name] : undefined;
}

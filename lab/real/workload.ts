/**
 * Deployment `web` and Service `web` of a scenario, for the real node: the same shape as the fast lab's
 * (lab/controlplane.ts makeDeployment/makeService), with the lab's image (never pulled), the app's
 * stamps written to a hostPath directory the truth reads after the pods are gone (kubelet deletes a
 * pod's container logs with the pod), no service-account token and no cluster DNS.
 */
import { makeDeployment, makeService } from '../controlplane.js';
import { BACKEND_PORT, SERVICE_PORT, VIP, type Scenario } from '../scenarios/index.js';
import { APP_IMAGE } from './config.js';

export const STAMPS_MOUNT = '/stamps';

export interface RealPreStop { exec?: string[]; sleepSeconds?: number }

export function realManifests(sc: Scenario, stampsDir: string, preStop?: RealPreStop): Array<Record<string, any>> {
  const dep = makeDeployment({
    name: 'web', replicas: sc.replicas, labels: { app: 'web' }, image: APP_IMAGE, port: BACKEND_PORT,
    args: ['--port', String(BACKEND_PORT), '--stamps', STAMPS_MOUNT, ...sc.backendArgs],
    maxSurge: sc.maxSurge, maxUnavailable: sc.maxUnavailable, terminationGracePeriodSeconds: sc.terminationGracePeriodSeconds,
    preStopSleepSeconds: preStop ? undefined : sc.preStopSleepSeconds,
    ...(sc.readinessProbe ? { readinessProbe: { path: '/healthz', port: BACKEND_PORT, periodSeconds: 1, failureThreshold: 1 } } : {}),
  }) as Record<string, any>;
  const pod = dep.spec.template.spec;
  const c = pod.containers[0];
  c.imagePullPolicy = 'Never';
  c.volumeMounts = [{ name: 'stamps', mountPath: STAMPS_MOUNT }];
  if (preStop?.exec) c.lifecycle = { preStop: { exec: { command: preStop.exec } } };
  else if (preStop?.sleepSeconds != null) c.lifecycle = { preStop: { sleep: { seconds: preStop.sleepSeconds } } };
  pod.volumes = [{ name: 'stamps', hostPath: { path: stampsDir, type: 'DirectoryOrCreate' } }];
  pod.automountServiceAccountToken = false;
  pod.enableServiceLinks = false;
  pod.dnsPolicy = 'Default';
  const svc = makeService({ name: 'web', clusterIP: VIP, port: SERVICE_PORT, targetPort: BACKEND_PORT, selector: { app: 'web' },
    type: sc.serviceType, ...(sc.nodePort ? { nodePort: sc.nodePort } : {}), externalTrafficPolicy: sc.externalTrafficPolicy });
  return [svc, dep];
}

/** Start every in-process controller of the lab's control plane against a Store. */
import type { Store } from '../apiserver/store.js';
import type { Controller } from './common.js';
import { startDeploymentController } from './deployment.js';
import { startEndpointSliceController } from './endpointslice.js';
import { startReplicaSetController } from './replicaset.js';
import { startKillingEvents, startScheduler } from './scheduler.js';

export interface ControllerOptions {
  nodeName: string;
  /** delay (and batching window) of EndpointSlice updates after pod changes, default 30 ms */
  endpointDelayMs?: number;
  /** emit kubelet-style "Killing" events when a pod starts terminating (default true) */
  killingEvents?: boolean;
}

export function startControllers(store: Store, opts: ControllerOptions): Controller {
  const cs: Controller[] = [
    startScheduler(store, opts.nodeName),
    startReplicaSetController(store),
    startDeploymentController(store),
    startEndpointSliceController(store, { delayMs: opts.endpointDelayMs ?? 30 }),
    ...(opts.killingEvents === false ? [] : [startKillingEvents(store, opts.nodeName)]),
  ];
  return { stop() { for (const c of cs) c.stop(); } };
}

export type { Controller } from './common.js';
export { rolloutComplete, podTemplateHash, resolveFenceposts } from './deployment.js';
export { desiredSlice, MANAGED_BY } from './endpointslice.js';
export { compareForDeletion } from './replicaset.js';

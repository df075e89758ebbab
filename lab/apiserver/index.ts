export { Store, ApiError, type Change, type StoreOptions, type ListOptions, type WriteOptions, type WatchEventType } from './store.js';
export { startApiServer, type ApiServer, type ApiServerOptions, type Faults } from './server.js';
export { RESOURCES, type ResourceDef } from './resources.js';
export { parseLabelSelector, parseFieldSelector, matchLabels, matchFields, selectorFromMap, selectorFromLabelSelector } from './selectors.js';
export { mergePatch, strategicMergePatch, jsonPatch, applyPatch, type PatchType } from './patch.js';

/**
 * A kubeconfig for the lab's API server: one cluster (plain-HTTP server URL), one user with a dummy
 * bearer token, insecure-skip-tls-verify (client-node 1.x refuses http:// without it), one context (optionally with a namespace), current-context set. Accepted by
 * @kubernetes/client-node's KubeConfig.loadFromFile and by kubectl.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export interface KubeconfigOptions {
  namespace?: string;
  /** names used for the cluster, user and context entries (default "rolltrace-lab") */
  name?: string;
  token?: string;
}

export function kubeconfigYaml(serverUrl: string, opts: KubeconfigOptions = {}): string {
  const name = opts.name ?? 'rolltrace-lab';
  const q = (s: string) => JSON.stringify(s); // a JSON string is a valid YAML scalar
  return [
    'apiVersion: v1',
    'kind: Config',
    'preferences: {}',
    'clusters:',
    `- name: ${q(name)}`,
    '  cluster:',
    `    server: ${q(serverUrl)}`,
    // client-node 1.x refuses an http:// server unless skipTLSVerify is set (config.js createAgent)
    '    insecure-skip-tls-verify: true',
    'users:',
    `- name: ${q(name)}`,
    '  user:',
    `    token: ${q(opts.token ?? 'rolltrace-lab-token')}`,
    'contexts:',
    `- name: ${q(name)}`,
    '  context:',
    `    cluster: ${q(name)}`,
    `    user: ${q(name)}`,
    ...(opts.namespace ? [`    namespace: ${q(opts.namespace)}`] : []),
    `current-context: ${q(name)}`,
    '',
  ].join('\n');
}

export function writeKubeconfig(path: string, serverUrl: string, opts: KubeconfigOptions = {}): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, kubeconfigYaml(serverUrl, opts), { mode: 0o600 });
  return path;
}

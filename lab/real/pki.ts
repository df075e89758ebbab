/**
 * The real node's certificates, made with openssl: a CA, the API server's serving certificate, the
 * kubelet's serving certificate, one client certificate in group system:masters (used by the
 * components, kubectl and the recorder: the lab is a single-user cluster) and the service-account key.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../sys.js';
import { NET, NODE_NAME } from './config.js';

const ssl = (args: string[]) => run('openssl', args);

function signed(dir: string, name: string, subj: string, san: string | null, extKeyUsage: string): void {
  const key = join(dir, `${name}.key`), csr = join(dir, `${name}.csr`), crt = join(dir, `${name}.crt`), ext = join(dir, `${name}.ext`);
  ssl(['genrsa', '-out', key, '2048']);
  ssl(['req', '-new', '-key', key, '-out', csr, '-subj', subj]);
  writeFileSync(ext, [
    'basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', `extendedKeyUsage=${extKeyUsage}`,
    ...(san ? [`subjectAltName=${san}`] : []), '',
  ].join('\n'));
  ssl(['x509', '-req', '-in', csr, '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'), '-CAcreateserial', '-out', crt, '-days', '30', '-extfile', ext]);
}

export function makePki(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  ssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '30', '-subj', '/CN=rolltrace-lab-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
  signed(dir, 'apiserver', '/CN=kube-apiserver',
    `IP:127.0.0.1,IP:${NET.nodeIp},IP:${NET.apiServiceIp},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc`, 'serverAuth');
  signed(dir, 'kubelet', `/CN=${NODE_NAME}`, `IP:${NET.nodeIp},IP:127.0.0.1,DNS:${NODE_NAME}`, 'serverAuth');
  signed(dir, 'admin', '/O=system:masters/CN=rolltrace-lab-admin', null, 'clientAuth');
  ssl(['genrsa', '-out', join(dir, 'sa.key'), '2048']);
  ssl(['rsa', '-in', join(dir, 'sa.key'), '-pubout', '-out', join(dir, 'sa.pub')]);
}

export const readPem = (dir: string, name: string) => ({
  ca: readFileSync(join(dir, 'ca.crt'), 'utf8'), cert: readFileSync(join(dir, `${name}.crt`), 'utf8'), key: readFileSync(join(dir, `${name}.key`), 'utf8'),
});

/**
 * The deployment files of qwexcloud are checked as far as this machine can:
 * the Kubernetes manifests parse and fit together (the Deployment's service
 * account is the one the Role is bound to, its volume is the claim, its
 * config is a valid qwexcloud.yaml), the Role grants what the k8s and kueue
 * backends call and nothing more, and systemd accepts the VM unit.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { loadServerConfig } from '../server/config.js';
import { ROOT } from './helpers.js';

const K8S = join(ROOT, 'deploy', 'kubernetes');

 
type Doc = any;

function manifests(): Doc[] {
  return readdirSync(K8S)
    .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
    .flatMap((f) => parseAllDocuments(readFileSync(join(K8S, f), 'utf8')).map((d) => {
      expect(d.errors, f).toEqual([]);
      return d.toJS();
    }));
}

describe('deploy/kubernetes', () => {
  it('every manifest parses, lives in the qwexcloud namespace, and is listed by the kustomization', () => {
    const docs = manifests();
    expect(docs.map((d) => d.kind).sort()).toEqual(['ConfigMap', 'Deployment', 'Namespace', 'PersistentVolumeClaim', 'Role', 'RoleBinding', 'Secret', 'Service', 'ServiceAccount']);
    for (const d of docs) if (d.kind !== 'Namespace') expect(d.metadata.namespace, d.kind).toBe('qwexcloud');
    const kustomization = parseAllDocuments(readFileSync(join(K8S, 'kustomization.yaml'), 'utf8'))[0]!.toJS();
    expect([...kustomization.resources].sort()).toEqual(readdirSync(K8S).filter((f) => f !== 'kustomization.yaml').sort());
  });

  it('the Role grants what the k8s and kueue backends call, and nothing more', () => {
    const role = manifests().find((d) => d.kind === 'Role');
    const grants = new Set<string>();
    for (const rule of role.rules) for (const group of rule.apiGroups) for (const resource of rule.resources) for (const verb of rule.verbs) grants.add(`${group}/${resource}:${verb}`);
    expect([...grants].sort()).toEqual(
      [
        'batch/jobs:create', 'batch/jobs:get', 'batch/jobs:list', 'batch/jobs:watch', 'batch/jobs:delete',
        '/pods:get', '/pods:list', '/pods:watch', '/pods/log:get', '/pods/exec:create', '/pods/exec:get',
        'kueue.x-k8s.io/localqueues:get', 'kueue.x-k8s.io/workloads:get', 'kueue.x-k8s.io/workloads:list', 'kueue.x-k8s.io/workloads:watch',
        'visibility.kueue.x-k8s.io/localqueues/pendingworkloads:get',
      ].sort(),
    );
    const binding = manifests().find((d) => d.kind === 'RoleBinding');
    expect(binding.roleRef.name).toBe(role.metadata.name);
    expect(binding.subjects).toEqual([{ kind: 'ServiceAccount', name: 'qwexcloud', namespace: 'qwexcloud' }]);
  });

  it('the Deployment runs as the bound service account with in-cluster credentials, the data claim, the database secret and a valid config', () => {
    const docs = manifests();
    const deployment = docs.find((d) => d.kind === 'Deployment');
    const pod = deployment.spec.template.spec;
    expect(pod.serviceAccountName).toBe(docs.find((d) => d.kind === 'ServiceAccount').metadata.name);
    expect(pod.automountServiceAccountToken).toBe(true);
    expect(deployment.spec.strategy.type).toBe('Recreate');
    expect(deployment.spec.replicas).toBe(1);
    const claim = docs.find((d) => d.kind === 'PersistentVolumeClaim').metadata.name;
    expect(pod.volumes.find((v: Doc) => v.name === 'data').persistentVolumeClaim.claimName).toBe(claim);
    const container = pod.containers[0];
    expect(container.env).toContainEqual({ name: 'QWEXCLOUD_DB', valueFrom: { secretKeyRef: { name: 'qwexcloud-db', key: 'url', optional: true } } });
    expect(docs.find((d) => d.kind === 'Secret').metadata.name).toBe('qwexcloud-db');
    expect(container.readinessProbe.httpGet.path).toBe('/v1/health');
    const service = docs.find((d) => d.kind === 'Service');
    expect(service.spec.selector).toEqual(deployment.spec.selector.matchLabels);
    // The ConfigMap's file is a configuration qwexcloud accepts, with in-cluster targets (no kubeconfig).
    const dir = mkdtempSync(join(tmpdir(), 'qwexcloud-deploy-'));
    try {
      writeFileSync(join(dir, 'qwexcloud.yaml'), docs.find((d) => d.kind === 'ConfigMap').data['qwexcloud.yaml']);
      const config = loadServerConfig({ config: join(dir, 'qwexcloud.yaml') }, {});
      expect(config.targets.map((t) => [t.name, t.backend, t.kubeconfig])).toEqual([['cpu', 'k8s', undefined], ['gpu', 'kueue', undefined]]);
      expect(config.listen).toEqual({ host: '0.0.0.0', port: 8470 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/qwexcloud.service', () => {
  it('keeps runs alive across restarts and passes systemd-analyze verify', async (ctx) => {
    const unit = readFileSync(join(ROOT, 'deploy', 'qwexcloud.service'), 'utf8');
    expect(unit).toMatch(/^KillMode=process$/m);
    expect(unit).toMatch(/^EnvironmentFile=-\/etc\/qwexcloud\/env$/m);
    const have = await execa('systemd-analyze', ['--version'], { reject: false }).catch(() => ({ exitCode: 1 }));
    if (have.exitCode !== 0) {
      if (process.env.QWEX_REQUIRE_SYSTEMD === '1') throw new Error('QWEX_REQUIRE_SYSTEMD=1 but systemd-analyze is not installed');
      console.log('skipped the systemd-analyze check: systemd-analyze is not installed');
      ctx.skip();
    }
    // Checked with this machine's node in place of /usr/bin/node: the unit's program must exist for verify.
    const dir = mkdtempSync(join(tmpdir(), 'qwexcloud-unit-'));
    try {
      const path = join(dir, 'qwexcloud.service');
      writeFileSync(path, unit.replace('/usr/bin/node', process.execPath));
      const verify = await execa('systemd-analyze', ['verify', path], { reject: false });
      expect(verify.stderr).not.toMatch(/qwexcloud\.service/);
      expect(verify.exitCode).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

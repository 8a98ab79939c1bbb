import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, loadConfig } from '../src/config/config.js';
import { QwexError } from '../src/errors.js';
import { qwex, sandbox, type Sandbox } from './helpers.js';

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
  mkdirSync(join(sb.project, '.qwex'));
});
afterEach(() => sb.cleanup());

const projectFile = (text: string): void => writeFileSync(join(sb.project, 'qwex.yaml'), text);
const localFile = (text: string): void => writeFileSync(join(sb.project, '.qwex', 'config.yaml'), text);

async function configError(): Promise<QwexError> {
  try {
    await loadConfig(sb.project);
  } catch (error) {
    expect(error).toBeInstanceOf(QwexError);
    return error as QwexError;
  }
  throw new Error('expected loadConfig to fail');
}

describe('configuration', () => {
  it('uses the defaults when there is no file', async () => {
    expect(await loadConfig(sb.project)).toEqual({ config: DEFAULT_CONFIG, sources: [] });
  });

  it('applies qwex.yaml, then .qwex/config.yaml on top: objects merge, lists are replaced', async () => {
    projectFile('backend: local\nkill_grace_seconds: 3\nenv: {A: "1", B: "2"}\nartifacts:\n  watch: [out, models]\n  max_file_size_mb: 5\n');
    localFile('env: {B: "local"}\nartifacts:\n  watch: [results]\n');
    const { config, sources } = await loadConfig(sb.project);
    expect(sources).toEqual([join(sb.project, 'qwex.yaml'), join(sb.project, '.qwex', 'config.yaml')]);
    expect(config).toMatchObject({
      killGraceSeconds: 3,
      env: { A: '1', B: 'local' },
      artifacts: { watch: ['results'], maxFileSizeMb: 5, ignore: DEFAULT_CONFIG.artifacts.ignore },
    });
  });

  it('rejects an unknown key, naming the file and the key', async () => {
    localFile('artifacts:\n  watch: [out]\n  max_size: 3\n');
    const error = await configError();
    expect(error.code).toBe('QWEX_CONFIG_INVALID');
    expect(error.message).toBe(`${join(sb.project, '.qwex', 'config.yaml')}: unknown key "artifacts.max_size"`);
  });

  it('rejects a wrong type, saying what was expected and what it got', async () => {
    projectFile('artifacts:\n  max_file_size_mb: "big"\n');
    expect((await configError()).message).toBe(`${join(sb.project, 'qwex.yaml')}: artifacts.max_file_size_mb: expected number, got "big"`);
  });

  it('rejects broken YAML with the file name', async () => {
    projectFile('artifacts: [unclosed\n');
    expect((await configError()).message).toMatch(/qwex\.yaml: invalid YAML/);
  });

  it('rejects a watched directory outside the project', async () => {
    projectFile('artifacts:\n  watch: ["../elsewhere"]\n');
    expect((await configError()).message).toMatch(/artifacts\.watch\.0: expected a directory inside the project/);
  });

  it('reads backends.k8s and backends.kueue, refusing Docker-only keys and bad values there', async () => {
    projectFile('backend: kueue\nbackends:\n  kueue:\n    image: python:3.12-slim\n    queue: gpu\n    namespace: ml\n    gpus: 1\n    retries: 2\n    sync: false\n');
    const { config } = await loadConfig(sb.project);
    expect(config.backends.kueue).toEqual({ image: 'python:3.12-slim', queue: 'gpu', namespace: 'ml', gpus: 1, retries: 2, sync: false });
    projectFile('backends:\n  k8s:\n    mounts: ["./data:/data"]\n');
    expect((await configError()).message).toMatch(/unknown key "backends\.k8s\.mounts"/);
    projectFile('backends:\n  k8s:\n    memory: lots\n');
    expect((await configError()).message).toMatch(/backends\.k8s: memory: "lots" is not a memory size/);
    projectFile('backends:\n  k8s:\n    namespace: Team_A\n');
    expect((await configError()).message).toMatch(/backends\.k8s\.namespace: expected a namespace name/);
  });

  it('rejects an unknown backend, naming the ones there are', async () => {
    projectFile('backend: mainframe\n');
    expect((await configError()).message).toMatch(/backend: expected one of "local", "docker", "ssh", "k8s", "kueue"/);
  });

  it('qwex run refuses a broken config with exit code 5 and runs nothing', async () => {
    projectFile('kill_grace_seconds: soon\n');
    const r = await qwex(sb, ['run', 'true']);
    expect(r.exitCode).toBe(5);
    expect(String(r.stderr)).toContain('kill_grace_seconds: expected number, got "soon"');
    expect(String(r.stderr)).toContain('hint: see "Configuration" (docs/configuration.md) for every key');
  });

  it('treats an empty file as no settings', async () => {
    projectFile('');
    expect((await loadConfig(sb.project)).config).toEqual(DEFAULT_CONFIG);
  });
});

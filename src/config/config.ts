import { DEFAULT_BACKEND } from '../backends/registry.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FileConfig, StageFile, TaskFile } from './file.js';
import { LOCAL_CONFIG_FILE, PROJECT_CONFIG_FILE } from '../paths.js';
import type { ArtifactSettings } from '../run/model.js';
import type { NotifySection } from '../notify/config.js';

/**
 * Configuration comes from two files with the same schema:
 *   qwex.yaml          at the project root: shared, usually committed;
 *   .qwex/config.yaml  this checkout's own settings, not committed.
 * Later wins: built-in defaults < qwex.yaml < .qwex/config.yaml < command-line flags.
 * Objects merge key by key; lists and scalars are replaced whole.
 */
export interface QwexConfig {
  backend: string;
  /** Where runs execute: their own snapshot of the project, or the project in place. Unset: by kind of run. */
  workspace?: 'snapshot' | 'inplace';
  workspaceMaxMb: number;
  killGraceSeconds: number;
  env: Record<string, string>;
  artifacts: ArtifactSettings;
  backends: Record<string, Record<string, unknown>>;
  /** What a run on this machine that asks for no GPUs sees: none (CUDA_VISIBLE_DEVICES=) or every one. */
  unrequestedGpus: 'none' | 'all';
  /** Named jobs (`jobs:`), each with the file that defined it. */
  jobs: Record<string, Defined<TaskFile>>;
  /** The top-level `stages:` (the default workflow). */
  stages?: Defined<StageFile[]>;
  /** Named workflows (`workflows.<name>.stages`). */
  workflows: Record<string, Defined<StageFile[]>>;
  /** Who is told when runs end (docs/notifications.md). */
  notify?: NotifySection;
}

/** A definition as written, and the file it came from (errors about it name the file). */
export interface Defined<T> {
  value: T;
  file: string;
}

export const DEFAULT_IGNORE = ['*.tmp', '*.log', '__pycache__', '.git'];

export const DEFAULT_CONFIG: QwexConfig = {
  backend: DEFAULT_BACKEND,
  workspaceMaxMb: 1000,
  killGraceSeconds: 10,
  env: {},
  artifacts: { watch: ['out'], ignore: DEFAULT_IGNORE, maxFileSizeMb: 100 },
  backends: {},
  unrequestedGpus: 'none',
  jobs: {},
  workflows: {},
};

export interface LoadedConfig {
  config: QwexConfig;
  /** The files that were read, in the order they were applied. */
  sources: string[];
}

/**
 * Reads both files (when there are any) and applies them to the defaults.
 * The YAML parser and the validator are loaded only when a file exists, so
 * a project without configuration pays nothing for them.
 */
export async function loadConfig(projectRoot: string): Promise<LoadedConfig> {
  let config = structuredClone(DEFAULT_CONFIG);
  const sources: string[] = [];
  for (const rel of [PROJECT_CONFIG_FILE, LOCAL_CONFIG_FILE]) {
    const path = join(projectRoot, rel);
    if (!existsSync(path)) continue;
    const { readConfigFile } = await import('./file.js');
    const parsed = readConfigFile(path);
    if (parsed === undefined) continue;
    config = applyFile(config, parsed, path);
    if (parsed.notify !== undefined) {
      const { mergeNotifySections, readNotifySection } = await import('../notify/config.js');
      config.notify = mergeNotifySections(config.notify, readNotifySection(parsed.notify, projectRoot, `${path}: notify`));
    }
    sources.push(path);
  }
  return { config, sources };
}

function applyFile(base: QwexConfig, file: FileConfig, path: string): QwexConfig {
  const stages = file.stages ? { value: file.stages, file: path } : base.stages;
  return {
    backend: file.backend ?? base.backend,
    ...((file.workspace ?? base.workspace) === undefined ? {} : { workspace: file.workspace ?? base.workspace }),
    workspaceMaxMb: file.workspace_max_mb ?? base.workspaceMaxMb,
    killGraceSeconds: file.kill_grace_seconds ?? base.killGraceSeconds,
    env: { ...base.env, ...file.env },
    artifacts: {
      watch: file.artifacts?.watch ?? base.artifacts.watch,
      ignore: file.artifacts?.ignore ?? base.artifacts.ignore,
      maxFileSizeMb: file.artifacts?.max_file_size_mb ?? base.artifacts.maxFileSizeMb,
    },
    backends: { ...base.backends, ...(file.backends as Record<string, Record<string, unknown>> | undefined) },
    unrequestedGpus: file.unrequested_gpus ?? base.unrequestedGpus,
    // A job or workflow of the same name in a later file replaces the earlier one whole.
    jobs: { ...base.jobs, ...Object.fromEntries(Object.entries(file.jobs ?? {}).map(([name, value]) => [name, { value, file: path }])) },
    ...(stages ? { stages } : {}),
    workflows: { ...base.workflows, ...Object.fromEntries(Object.entries(file.workflows ?? {}).map(([name, w]) => [name, { value: w.stages, file: path }])) },
    ...(base.notify === undefined ? {} : { notify: base.notify }),
  };
}

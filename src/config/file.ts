import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { BACKEND_NAMES, BACKENDS } from '../backends/registry.js';
import { parseGpus, parseMount, parseResources } from './container.js';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { notifySectionSchema, type NotifySectionFile } from '../notify/config.js';

/** Reading and validating one configuration file (see config.ts for how files combine). */
const relativeDir = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), { message: 'expected a directory inside the project (relative, no "..")' });


const backendSections = Object.fromEntries(BACKENDS.map((b) => [b.name, b.configSchema(z).optional()]));

const envMap = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string());
const paramName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected a parameter name (letters, digits, _)');
const stageName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, 'expected a name of letters, digits, _, . and -');
const scalar = z.union([z.string(), z.number(), z.boolean()]);
// The options a backend takes on the command line (host, queue...) are keys of a job or stage too; each backend checks its own.
const backendOptionKeys = Object.fromEntries([...new Set(BACKENDS.flatMap((b) => b.optionKeys))].map((key) => [key, scalar.optional()]));

/** What a named job and a workflow stage have in common: a run's command, where it runs, and how. */
const taskShape = {
  command: z.union([z.string().min(1), z.array(z.string()).min(1)]).optional(),
  shell: z.boolean().optional(),
  cwd: relativeDir.optional(),
  backend: z.enum(BACKEND_NAMES as [string, ...string[]]).optional(),
  env: envMap.optional(),
  watch: z.array(relativeDir).optional(),
  timeout_seconds: z.number().positive().optional(),
  kill_grace_seconds: z.number().nonnegative().optional(),
  retries: z.number().int().nonnegative().optional(),
  retry_on: z.array(z.enum(['failed', 'lost'])).min(1).optional(),
  retry_backoff_seconds: z.number().nonnegative().optional(),
  params: z.record(paramName, scalar).optional(),
  // Container settings, as under backends.<name>: the stage's own.
  image: z.string().min(1).optional(),
  pull: z.enum(['never', 'missing', 'always']).optional(),
  user: z.string().min(1).optional(),
  network: z.string().min(1).optional(),
  cpus: z.union([z.number(), z.string()]).optional(),
  memory: z.union([z.number(), z.string()]).optional(),
  gpus: z.union([z.number(), z.string()]).optional(),
  mounts: z.array(z.string()).optional(),
  ...backendOptionKeys,
};

const stageSchema = z.strictObject({
  ...taskShape,
  name: stageName,
  /** A named job the stage runs (its keys are the stage's defaults). */
  job: z.string().min(1).optional(),
  needs: z.array(z.string()).optional(),
  continue_on_failure: z.boolean().optional(),
});

const fileSchema = z.strictObject({
  backend: z.enum(BACKEND_NAMES as [string, ...string[]]).optional(),
  kill_grace_seconds: z.number().nonnegative().optional(),
  workspace: z.enum(['snapshot', 'inplace']).optional(),
  workspace_max_mb: z.number().positive().optional(),
  unrequested_gpus: z.enum(['none', 'all']).optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string()).optional(),
  artifacts: z
    .strictObject({
      watch: z.array(relativeDir).optional(),
      ignore: z.array(z.string()).optional(),
      max_file_size_mb: z.number().positive().optional(),
    })
    .optional(),
  // Each backend's section is its descriptor's own schema.
  backends: z.strictObject(backendSections).optional(),
  jobs: z.record(stageName, z.strictObject(taskShape)).optional(),
  stages: z.array(stageSchema).min(1).optional(),
  workflows: z.record(stageName, z.strictObject({ stages: z.array(stageSchema).min(1) })).optional(),
  notify: notifySectionSchema.optional(),
});

/** A named job (`jobs.<name>`), and a stage (`stages:`, `workflows.<name>.stages`), as written (checked in src/workflow/definition.ts). */
export interface TaskFile {
  command?: string | string[];
  shell?: boolean;
  cwd?: string;
  backend?: string;
  env?: Record<string, string>;
  watch?: string[];
  timeout_seconds?: number;
  kill_grace_seconds?: number;
  retries?: number;
  retry_on?: ('failed' | 'lost')[];
  retry_backoff_seconds?: number;
  params?: Record<string, string | number | boolean>;
  image?: string;
  pull?: string;
  user?: string;
  network?: string;
  cpus?: string | number;
  memory?: string | number;
  gpus?: string | number;
  mounts?: string[];
  /** The backends' own options (host, context, namespace, queue, sync). */
  [option: string]: unknown;
}

export interface StageFile extends TaskFile {
  name: string;
  job?: string;
  needs?: string[];
  continue_on_failure?: boolean;
}

export interface FileConfig {
  backend?: string;
  kill_grace_seconds?: number;
  workspace?: 'snapshot' | 'inplace';
  workspace_max_mb?: number;
  unrequested_gpus?: 'none' | 'all';
  env?: Record<string, string>;
  artifacts?: { watch?: string[]; ignore?: string[]; max_file_size_mb?: number };
  backends?: Record<string, Record<string, unknown> | undefined>;
  jobs?: Record<string, TaskFile>;
  stages?: StageFile[];
  workflows?: Record<string, { stages: StageFile[] }>;
  notify?: NotifySectionFile;
}

/** Reads and validates one file; undefined when it does not exist. */
export function readConfigFile(path: string): FileConfig | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    const code = errnoCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new QwexError(ErrorCode.ConfigInvalid, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    throw new QwexError(ErrorCode.ConfigInvalid, `${path}: invalid YAML: ${first.message.split('\n')[0]}`, {
      hint: 'fix the YAML syntax at the line shown',
      details: { file: path },
    });
  }
  const value: unknown = doc.toJS() ?? {};
  const result = fileSchema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new QwexError(ErrorCode.ConfigInvalid, `${path}: ${describeIssue(issue, value)}`, {
      hint: 'see "Configuration" (docs/configuration.md) for every key and its type',
      details: { file: path, key: keyOf(issue) },
    });
  }
  const data = result.data as FileConfig;
  for (const { name } of BACKENDS.filter((b) => b.traits.container)) {
    const section = data.backends?.[name];
    if (!section) continue;
    // Checked here too, so that a bad value names this file rather than failing the first run that uses it.
    try {
      parseResources(section, `${path}: backends.${name}`);
      for (const mount of (section as { mounts?: string[] }).mounts ?? []) parseMount(mount, '/', `${path}: backends.${name}`);
    } catch (error) {
      const qe = error as QwexError;
      throw new QwexError(ErrorCode.ConfigInvalid, qe.message, { ...(qe.hint ? { hint: qe.hint } : {}), details: { file: path, key: `backends.${name}` } });
    }
  }
  for (const { name } of BACKENDS.filter((b) => !b.traits.container && b.optionKeys.includes('gpus'))) {
    const gpus = (data.backends?.[name] as { gpus?: string | number } | undefined)?.gpus;
    if (gpus === undefined) continue;
    try {
      parseGpus(gpus, `${path}: backends.${name}`);
    } catch (error) {
      const qe = error as QwexError;
      throw new QwexError(ErrorCode.ConfigInvalid, qe.message, { ...(qe.hint ? { hint: qe.hint } : {}), details: { file: path, key: `backends.${name}.gpus` } });
    }
  }
  return data;
}

function keyOf(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys') path.push(issue.keys[0] ?? '');
  return path.join('.') || '(top level)';
}

function describeIssue(issue: z.core.$ZodIssue, root: unknown): string {
  const key = keyOf(issue);
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown key "${key}"`;
    case 'invalid_type': {
      const got = valueAt(root, issue.path);
      return `${key}: expected ${issue.expected}, got ${got === undefined ? 'nothing' : JSON.stringify(got)}`;
    }
    case 'invalid_value':
      return `${key}: expected one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}, got ${JSON.stringify(valueAt(root, issue.path))}`;
    default:
      return `${key}: ${issue.message}`;
  }
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let cur: unknown = root;
  for (const part of path) {
    if (typeof cur !== 'object' || cur === null) return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[part];
  }
  return cur;
}


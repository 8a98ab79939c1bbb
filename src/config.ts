import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { ErrorCode, QwexError, errnoCode } from './errors.js';
import { BACKEND_NAMES, PLANNED_BACKENDS } from './backends/names.js';
import { LOCAL_CONFIG_FILE, PROJECT_CONFIG_FILE } from './paths.js';
import type { ArtifactSettings } from './run.js';

/**
 * Configuration comes from two files with the same schema:
 *   qwex.yaml          at the project root: shared, usually committed;
 *   .qwex/config.yaml  this checkout's own settings, not committed.
 * Later wins: built-in defaults < qwex.yaml < .qwex/config.yaml < command-line flags.
 * Objects merge key by key; lists and scalars are replaced whole.
 */
export interface QwexConfig {
  backend: string;
  killGraceSeconds: number;
  env: Record<string, string>;
  artifacts: ArtifactSettings;
  backends: Record<string, Record<string, unknown>>;
}

export const DEFAULT_IGNORE = ['*.tmp', '*.log', '__pycache__', '.git'];

export const DEFAULT_CONFIG: QwexConfig = {
  backend: 'local',
  killGraceSeconds: 10,
  env: {},
  artifacts: { watch: ['out'], ignore: DEFAULT_IGNORE, maxFileSizeMb: 100 },
  backends: {},
};

const relativeDir = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), { message: 'expected a directory inside the project (relative, no "..")' });

const fileSchema = z.strictObject({
  backend: z.enum([...BACKEND_NAMES, ...PLANNED_BACKENDS]).optional(),
  kill_grace_seconds: z.number().nonnegative().optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name'), z.string()).optional(),
  artifacts: z
    .strictObject({
      watch: z.array(relativeDir).optional(),
      ignore: z.array(z.string()).optional(),
      max_file_size_mb: z.number().positive().optional(),
    })
    .optional(),
  backends: z
    .strictObject({
      local: z.strictObject({}).optional(),
    })
    .optional(),
});

type FileConfig = z.infer<typeof fileSchema>;

export interface LoadedConfig {
  config: QwexConfig;
  /** The files that were read, in the order they were applied. */
  sources: string[];
}

export function loadConfig(projectRoot: string): LoadedConfig {
  let config = structuredClone(DEFAULT_CONFIG);
  const sources: string[] = [];
  for (const rel of [PROJECT_CONFIG_FILE, LOCAL_CONFIG_FILE]) {
    const path = join(projectRoot, rel);
    const parsed = readConfigFile(path);
    if (parsed === undefined) continue;
    config = applyFile(config, parsed);
    sources.push(path);
  }
  return { config, sources };
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
      hint: 'see "Configuration" in the README for every key and its type',
      details: { file: path, key: keyOf(issue) },
    });
  }
  if (result.data.backend !== undefined && !(BACKEND_NAMES as readonly string[]).includes(result.data.backend)) {
    throw new QwexError(ErrorCode.ConfigInvalid, `${path}: backend: "${result.data.backend}" is not available in this version of qwex (available: ${BACKEND_NAMES.join(', ')})`, {
      details: { file: path, key: 'backend' },
    });
  }
  return result.data;
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

function applyFile(base: QwexConfig, file: FileConfig): QwexConfig {
  return {
    backend: file.backend ?? base.backend,
    killGraceSeconds: file.kill_grace_seconds ?? base.killGraceSeconds,
    env: { ...base.env, ...file.env },
    artifacts: {
      watch: file.artifacts?.watch ?? base.artifacts.watch,
      ignore: file.artifacts?.ignore ?? base.artifacts.ignore,
      maxFileSizeMb: file.artifacts?.max_file_size_mb ?? base.artifacts.maxFileSizeMb,
    },
    backends: { ...base.backends, ...(file.backends as Record<string, Record<string, unknown>> | undefined) },
  };
}

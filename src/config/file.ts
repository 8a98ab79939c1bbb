import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { BACKEND_NAMES, BACKENDS } from '../backends/registry.js';
import { parseMount, parseResources } from './container.js';
import { ErrorCode, QwexError, errnoCode } from '../errors.js';
import { notifySectionSchema, type NotifySectionFile } from '../notify/config.js';

/** Reading and validating one configuration file (see config.ts for how files combine). */
const relativeDir = z
  .string()
  .min(1)
  .refine((p) => !p.startsWith('/') && !p.split('/').includes('..'), { message: 'expected a directory inside the project (relative, no "..")' });


const backendSections = Object.fromEntries(BACKENDS.map((b) => [b.name, b.configSchema(z).optional()]));

const fileSchema = z.strictObject({
  backend: z.enum(BACKEND_NAMES as [string, ...string[]]).optional(),
  kill_grace_seconds: z.number().nonnegative().optional(),
  workspace: z.enum(['snapshot', 'inplace']).optional(),
  workspace_max_mb: z.number().positive().optional(),
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
  notify: notifySectionSchema.optional(),
});

export interface FileConfig {
  backend?: string;
  kill_grace_seconds?: number;
  workspace?: 'snapshot' | 'inplace';
  workspace_max_mb?: number;
  env?: Record<string, string>;
  artifacts?: { watch?: string[]; ignore?: string[]; max_file_size_mb?: number };
  backends?: Record<string, Record<string, unknown> | undefined>;
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


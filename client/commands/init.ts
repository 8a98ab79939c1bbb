import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { BACKENDS, DEFAULT_BACKEND } from '../../src/backends/registry.js';
import type { BackendDescriptor, Detection } from '../../src/backends/types.js';
import { ErrorCode, QwexError } from '../../src/errors.js';
import { writeFileAtomic } from '../../src/fs-atomic.js';
import { PROJECT_CONFIG_FILE } from '../../src/paths.js';
import { stringify } from 'yaml';
import type { Context } from '../context.js';
import { paint, styleFor } from '../render.js';

interface InitOptions {
  force?: boolean;
  json?: boolean;
}

/** One backend as `qwex init` found it, and how its section went into the file. */
interface Found extends Detection {
  backend: string;
  /** active: a section in effect; commented: written commented out (not found, or another remote backend is the one in effect). */
  written: 'active' | 'commented' | 'none';
}

/**
 * `qwex init`: writes a commented qwex.yaml at the project root, with a
 * section for each backend this machine has (each descriptor's `detect`),
 * and the others commented out with what is missing. At most one remote
 * backend is in effect, so that `qwex batch` knows where to go.
 */
export default async function init(ctx: Context, options: InitOptions): Promise<number> {
  const path = join(ctx.project, PROJECT_CONFIG_FILE);
  if (existsSync(path) && !options.force) {
    throw new QwexError(ErrorCode.Usage, `${path} already exists`, { hint: 'edit it, or run qwex init --force to write a new one in its place' });
  }
  const detected = await Promise.all(BACKENDS.filter((b) => b.detect).map(async (b) => [b, await detectQuietly(b)] as const));
  let remoteInEffect = false;
  const found: Found[] = detected.map(([descriptor, detection]) => {
    let written: Found['written'] = detection.config === undefined ? 'none' : 'commented';
    if (detection.found && detection.config !== undefined && !(descriptor.traits.remote && remoteInEffect)) {
      written = 'active';
      remoteInEffect ||= descriptor.traits.remote;
    }
    return { backend: descriptor.name, ...detection, written };
  });
  writeFileAtomic(path, render(found), 0o644);
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ path, backends: found }, null, 2)}\n`);
    return 0;
  }
  const style = styleFor(process.stdout);
  const lines = found.map((f) => `${f.found ? paint(style, 'green', style.tty ? '✔' : 'found') : paint(style, 'gray', style.tty ? '·' : 'not found')} ${f.backend}: ${f.summary}`);
  process.stdout.write(`wrote ${path}\n${lines.join('\n')}\n`);
  return 0;
}

async function detectQuietly(descriptor: BackendDescriptor): Promise<Detection> {
  try {
    return await descriptor.detect!();
  } catch (error) {
    return { found: false, summary: `could not check: ${(error as Error).message}` };
  }
}

function render(found: Found[]): string {
  const names = BACKENDS.map((b) => b.name).join(', ');
  const remote = BACKENDS.filter((b) => b.traits.remote).map((b) => b.name).join(', ');
  const sections = found.filter((f) => f.written !== 'none').map((f) => {
    const summary = BACKENDS.find((b) => b.name === f.backend)!.summary;
    const yaml = stringify({ [f.backend]: f.config })
      .trimEnd()
      .split('\n')
      .map((line) => (f.written === 'active' ? `  ${line}` : `  # ${line}`));
    const why = f.written === 'active' ? `Found: ${f.summary}` : f.found ? `Found: ${f.summary}; uncomment it (and comment out the other) for qwex batch to go there` : `Not set up: ${f.summary}`;
    return [`  # ${f.backend}: ${summary}. ${why}`, ...yaml].join('\n');
  });
  const anyActive = found.some((f) => f.written === 'active');
  return `# qwex.yaml: how qwex runs this project's commands, written by \`qwex init\`.
# Every key: docs/configuration.md. .qwex/config.yaml (this checkout only, not committed) overrides this file.

# Where \`qwex run\` runs unless -b/--backend says otherwise: ${names}.
# \`qwex batch\` runs on the remote backend (${remote}) configured under backends:.
backend: ${DEFAULT_BACKEND}

# Files a run writes under these directories are kept as its artifacts (qwex artifacts RUN).
artifacts:
  watch: [out]

# Named jobs: qwex run -j train --set lr=0.01 (docs/workflows.md).
# jobs:
#   train:
#     command: python train.py --lr {lr}
#     params: { lr: 0.1 }

# Each backend's settings; flags of qwex run (--image, --host, --context...) win over them.
${anyActive ? 'backends:' : '# backends:'}
${sections.join('\n')}
`;
}

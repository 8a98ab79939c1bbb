import type { Client } from 'ssh2';
import { executable } from '../../config/command.js';
import { ErrorCode, QwexError } from '../../errors.js';
import type { Job } from '../../run/model.js';
import { shellQuote } from '../shell-quote.js';
import { exec, type HostSettings } from './connection.js';
import { remoteFailure } from './sync.js';

/** The launcher's exit status when the run's `started` marker already exists: an earlier start launched it. */
const ALREADY_LAUNCHED = 75;

/**
 * Launches the command in the remote run directory, exactly once per run:
 * the wrapper is written first (atomically), then one remote shell line
 * takes the exclusive marker `started/` (mkdir) and starts the wrapper in
 * the background under setsid. A second start of the same run finds the
 * marker and adopts what the first launched. Returns whether this call
 * launched it.
 */
export async function launchOnce(client: Client, settings: HostSettings, remoteDir: string, wrapper: string): Promise<boolean> {
  const q = shellQuote(remoteDir);
  const written = await exec(client, `cd ${q} && cat > run.sh.tmp && mv run.sh.tmp run.sh`, { stdin: wrapper });
  if (written.code !== 0) throw remoteFailure(settings, 'cannot write the command\'s wrapper', written.stderr);
  const started = await exec(
    client,
    `cd ${q} || exit 1; mkdir started 2>/dev/null || exit ${ALREADY_LAUNCHED}; (if command -v setsid >/dev/null 2>&1; then setsid sh run.sh; else sh run.sh; fi >/dev/null 2>&1 </dev/null &) && echo ok`,
  );
  if (started.code === ALREADY_LAUNCHED) return false;
  if (started.code !== 0) throw remoteFailure(settings, 'cannot start the command', started.stderr);
  return true;
}

/** The shell wrapper: the command in its own process group (job control), its pgid and exit status in files. */
export function wrapperScript(job: Job, runId: string, cwd: string): string {
  const { file, args } = executable(job);
  const env = { ...job.env, PYTHONUNBUFFERED: job.env.PYTHONUNBUFFERED ?? '1', QWEX_RUN_ID: runId };
  const exports = Object.entries(env).map(([k, v]) => `export ${k}=${shellQuote(v)}`).join('\n');
  return `#!/bin/sh
# Written by qwex: runs one command and records its process group and exit status.
RUN=$(cd "$(dirname "$0")" && pwd) || exit 1
cd "$RUN/workspace/${cwd.replace(/["\\$`]/g, '\\$&')}" || { echo 127 > "$RUN/exit.tmp"; mv "$RUN/exit.tmp" "$RUN/exit"; exit 0; }
${exports}
export QWEX_RUN_DIR="$RUN"
# The command leads its own process group, so that cancel signals it and not this wrapper
# (setsid does not fork here: a background child is never a group leader).
if command -v setsid >/dev/null 2>&1; then set -- setsid
elif command -v perl >/dev/null 2>&1; then set -- perl -e 'setpgrp(0, 0); exec { $ARGV[0] } @ARGV or exit 127'
else set --
fi
"$@" ${[file, ...args].map(shellQuote).join(' ')} >"$RUN/stdout.log" 2>"$RUN/stderr.log" </dev/null &
echo $! > "$RUN/pgid.tmp" && mv "$RUN/pgid.tmp" "$RUN/pgid"
wait $!
echo $? > "$RUN/exit.tmp" && mv "$RUN/exit.tmp" "$RUN/exit"
`;
}

/** The process group the wrapper recorded (it does so at once); a launch that left none is named as such. */
export async function waitForPgid(client: Client, remoteDir: string): Promise<number> {
  const r = await exec(client, `i=0; while [ ! -s ${shellQuote(`${remoteDir}/pgid`)} ]; do i=$((i+1)); [ $i -gt 100 ] && exit 1; sleep 0.05; done; cat ${shellQuote(`${remoteDir}/pgid`)}`);
  const pgid = Number(r.stdout.toString('utf8').trim());
  if (r.code !== 0 || !Number.isInteger(pgid) || pgid <= 0) {
    throw new QwexError(ErrorCode.BackendUnavailable, `the command did not start on the remote (no process group recorded in ${remoteDir}): ${r.stderr.trim()}`);
  }
  return pgid;
}

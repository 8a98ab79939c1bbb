import type { CloudRun } from '../../src/cloud/api.js';
import type { Context } from '../context.js';
import { parseCount, parseStatuses } from '../parse.js';
import { formatAge, formatDuration, paint, psTable, runDuration, styleFor, table, type Style } from '../render.js';

/** Runs asked of the server per request. */
const PAGE = 50;

interface PsOptions {
  all?: boolean;
  last: string;
  status?: string;
  job?: string;
  json?: boolean;
  cloud?: boolean;
  server?: string;
}

export default async function ps(ctx: Context, options: PsOptions): Promise<number> {
  const limit = parseCount(options.last, '--last');
  const statuses = options.status === undefined ? undefined : parseStatuses(options.status);
  if (options.cloud) return cloudPs(options.server, limit, statuses, options.json === true);
  const query = { ...(options.all ? {} : { project: ctx.project }), ...(statuses ? { statuses } : {}), ...(options.job ? { recipe: options.job } : {}), limit };
  const shown = await (await ctx.service()).list(query);
  if (options.json) {
    process.stdout.write(`${JSON.stringify(shown, null, 2)}\n`);
    return 0;
  }
  if (shown.length === 0) {
    process.stderr.write(options.all ? 'no runs yet\n' : `no runs in ${ctx.project} yet (qwex ps --all lists every project)\n`);
    return 0;
  }
  process.stdout.write(`${psTable(shown, styleFor(process.stdout), { showProject: options.all === true })}\n`);
  return 0;
}

/** `qwex ps --cloud`: this user's history on the server, newest last, paged through the API (-n 0: all of it). */
async function cloudPs(server: string | undefined, limit: number, statuses: CloudRun['status'][] | undefined, json: boolean): Promise<number> {
  const [{ CloudClient }, { requireLogin }] = await Promise.all([import('../../src/cloud/client.js'), import('../../src/cloud/credentials.js')]);
  const login = requireLogin(server);
  const client = new CloudClient({ url: login.url, token: login.token });
  const runs: CloudRun[] = [];
  // Pages of the server's default size: -n 0 walks the whole history a page at a time.
  for await (const run of client.listAll({ ...(statuses ? { status: statuses } : {}), limit: limit === 0 ? PAGE : Math.min(limit, PAGE) })) {
    runs.push(run);
    if (limit !== 0 && runs.length >= limit) break;
  }
  runs.reverse();
  if (json) {
    process.stdout.write(`${JSON.stringify(runs, null, 2)}\n`);
    return 0;
  }
  if (runs.length === 0) {
    process.stderr.write(`no runs of ${login.user} on ${login.url} yet\n`);
    return 0;
  }
  process.stdout.write(`${cloudTable(runs, styleFor(process.stdout))}\n`);
  return 0;
}

function cloudTable(runs: CloudRun[], style: Style): string {
  const showName = runs.some((r) => r.name);
  const showPlace = runs.some((r) => r.cluster || r.queue);
  const rows = runs.map((r) => {
    const duration = runDuration({ startedAt: r.startedAt ?? undefined, finishedAt: r.finishedAt ?? undefined });
    return [
      r.id,
      paint(style, r.status === 'succeeded' ? 'green' : r.status === 'failed' || r.status === 'lost' ? 'red' : 'gray', r.status),
      r.signal ?? (r.exitCode === null ? '' : String(r.exitCode)),
      formatAge(r.createdAt),
      duration === undefined ? '' : formatDuration(duration),
      `${r.target} (${r.backend})`,
      ...(showPlace ? [[r.cluster, r.queue].filter(Boolean).join('/')] : []),
      ...(showName ? [r.name ?? ''] : []),
      r.command.replace(/\s+/g, ' ').slice(0, 60),
    ];
  });
  return table(['ID', 'STATUS', 'EXIT', 'CREATED', 'DURATION', 'TARGET', ...(showPlace ? ['CLUSTER/QUEUE'] : []), ...(showName ? ['NAME'] : []), 'COMMAND'], rows, style);
}

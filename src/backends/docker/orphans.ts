import { QwexError } from '../../errors.js';
import type { OrphanContext, OrphanReport } from '../types.js';
import { LABEL_RUN_DIR, LABEL_RUN_ID } from './container.js';
import { connect, engineEndpoint, unreachable, type Engine } from './engine.js';

/** Containers qwex created on this engine, with their labels. */
async function listQwexContainers(docker: Engine): Promise<{ id: string; name: string; runId: string; runDir: string | undefined; state: string }[]> {
  const found = await docker.listContainers({ all: true, filters: { label: [LABEL_RUN_ID] } });
  return found.map((c) => ({
    id: c.Id,
    name: (c.Names[0] ?? c.Id).replace(/^\//, ''),
    runId: c.Labels[LABEL_RUN_ID] ?? '',
    runDir: c.Labels[LABEL_RUN_DIR],
    state: c.State,
  }));
}

/**
 * qwex containers on the engine that no active run accounts for: no run
 * record at the directory its label names, or a record that already ended
 * (its removal failed). An engine that does not answer is reported, not an
 * error: most machines without Docker have nothing to clean up.
 */
export async function findOrphanContainers(context: OrphanContext): Promise<OrphanReport[]> {
  const report: OrphanReport = { backend: 'docker', where: engineEndpoint(), reachable: false, orphans: [] };
  let docker: Engine;
  try {
    docker = await connect();
    await docker.ping();
  } catch (error) {
    report.error = (error instanceof QwexError ? error : unreachable(error)).message;
    return [report];
  }
  report.reachable = true;
  for (const c of await listQwexContainers(docker)) {
    const active = c.runDir === undefined ? undefined : context.isActive(c.runDir);
    if (active === true) continue;
    const reason = active === false ? 'its run has ended' : c.runDir === undefined ? 'it names no run directory' : `no run record at ${c.runDir}`;
    report.orphans.push({
      id: c.id,
      what: `container ${c.name} (${c.state})`,
      runId: c.runId,
      reason,
      remove: () => docker.getContainer(c.id).remove({ force: true }),
    });
  }
  return [report];
}

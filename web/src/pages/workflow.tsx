import { useEffect, useState } from 'preact/hooks';
import { api, watchRuns, type ApiError, type WorkflowView } from '../api.js';
import { StatusBadge } from '../components/status.js';
import { WorkflowGraph } from '../components/workflow-graph.js';

/** A workflow's stages as a graph with their states, and as a table; kept current as its stage runs change. */
export function WorkflowPage({ id }: { id: string }) {
  const [workflow, setWorkflow] = useState<WorkflowView | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);

  useEffect(() => {
    let stopped = false;
    const load = (): void => {
      api.workflow(id).then(
        (w) => {
          if (stopped) return;
          setWorkflow(w);
          setError(undefined);
        },
        (e: ApiError) => !stopped && setError(e),
      );
    };
    load();
    // A stage's run changed: the workflow's state follows from its stages' runs.
    const close = watchRuns((run) => {
      if (run.workflow?.id === id) load();
    }, load);
    return () => {
      stopped = true;
      close();
    };
  }, [id]);

  return (
    <>
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href="/">Runs</a> › workflow <span class="mono">{id.slice(0, 13)}</span>
      </nav>
      <h1 tabIndex={-1}>
        Workflow <span class="mono">{id.slice(0, 13)}</span> {workflow && <StatusBadge status={workflow.status} />}
      </h1>
      {error && (
        <p role="alert" class="error">
          {error.message}
          {error.hint ? ` (${error.hint})` : ''}
        </p>
      )}
      {!workflow && !error && <p class="muted">Loading…</p>}
      {workflow && (
        <>
          <section class="panel" aria-labelledby="graph-heading">
            <h2 id="graph-heading">Stages</h2>
            <WorkflowGraph workflow={workflow} />
          </section>
          <section class="panel" aria-labelledby="stages-heading">
            <h2 id="stages-heading">Stage by stage</h2>
            <div class="table-wrap">
              <table>
                <thead>
                  <tr>
                    <th scope="col">Stage</th>
                    <th scope="col">Status</th>
                    <th scope="col" class="num">Exit</th>
                    <th scope="col">Needs</th>
                    <th scope="col">Run</th>
                  </tr>
                </thead>
                <tbody>
                  {workflow.stages.map((stage) => (
                    <tr key={stage.name}>
                      <td>{stage.name}</td>
                      <td>
                        <StatusBadge status={stage.status} />
                      </td>
                      <td class="num">{stage.exitCode ?? ''}</td>
                      <td>{stage.needs.join(', ') || '—'}</td>
                      <td>{stage.runId ? <a href={`/runs/${stage.runId}`} class="mono">{stage.runId.slice(0, 13)}</a> : <span class="muted">not started</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
          </section>
        </>
      )}
    </>
  );
}

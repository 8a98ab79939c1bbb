import { useEffect, useState } from 'preact/hooks';
import { type ApiError, api, watchRuns, type CloudRunDetail } from '../api.js';
import { Artifacts } from '../components/artifacts.js';
import { ConfirmDialog } from '../components/confirm.js';
import { LogView } from '../components/log-view.js';
import { StatusBadge, isActive } from '../components/status.js';
import { UsagePlots } from '../components/usage-plots.js';
import { exitText, formatTime, runDuration, shortId, waitingText } from '../format.js';
import { navigate } from '../router.js';
import { useNow } from '../use-now.js';

type Asking = 'cancel' | 'rerun' | undefined;

/** One run: its record, live log, resource plots and artifacts, with cancel and rerun (each asked for twice). */
export function RunPage({ id, mode }: { id: string; mode: 'team' | 'workstation' }) {
  const [run, setRun] = useState<CloudRunDetail | undefined>(undefined);
  const [error, setError] = useState<ApiError | undefined>(undefined);
  const [asking, setAsking] = useState<Asking>(undefined);
  const [busy, setBusy] = useState(false);
  const [actionError, setActionError] = useState<string | undefined>(undefined);
  const active = run ? isActive(run.status) : false;
  const now = useNow(active);

  useEffect(() => {
    let stopped = false;
    setRun(undefined);
    setError(undefined);
    const load = (): void => {
      api.run(id).then(
        (r) => !stopped && setRun(r),
        (e: ApiError) => !stopped && setError(e),
      );
    };
    load();
    // The feed says when the run changed; the page then fetches its whole record again.
    const close = watchRuns(
      (changed) => {
        if (changed.id === id) load();
      },
      load,
    );
    return () => {
      stopped = true;
      close();
    };
  }, [id]);

  const act = async (what: 'cancel' | 'rerun'): Promise<void> => {
    setBusy(true);
    setActionError(undefined);
    try {
      if (what === 'cancel') setRun(await api.cancel(id));
      else navigate(`/runs/${(await api.rerun(id)).id}`);
    } catch (e) {
      setActionError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  if (error) {
    return (
      <>
        <h1 tabIndex={-1}>Run {shortId(id)}</h1>
        <p role="alert" class="error">{error.message}</p>
        <p><a href="/">All runs</a></p>
      </>
    );
  }
  if (!run) return <p class="muted">Loading…</p>;

  const facts: [string, string][] = [
    ['Status', run.status],
    ['Exit', exitText(run) || '—'],
    ['Ended because', run.endReason ?? '—'],
    ['Backend', run.backend],
    ...(run.cluster ? [['Cluster', run.cluster] as [string, string]] : []),
    ...(run.queue ? [['Queue', run.queue] as [string, string]] : []),
    [mode === 'team' ? 'User' : 'Project', mode === 'team' ? run.user : run.target],
    ...(mode === 'team' ? [['Target', run.target] as [string, string]] : []),
    ['Created', formatTime(run.createdAt)],
    ['Started', formatTime(run.startedAt) || '—'],
    ['Finished', formatTime(run.finishedAt) || '—'],
    ['Duration', runDuration(run, now) || '—'],
    ...(run.job ? [['Job', run.job] as [string, string]] : []),
  ];

  return (
    <>
      <nav aria-label="Breadcrumb" class="crumbs">
        <a href="/">Runs</a> › <span class="mono">{shortId(run.id)}</span>
      </nav>
      <div class="title-row">
        <h1 tabIndex={-1}>
          {run.name ?? `Run ${shortId(run.id)}`} <StatusBadge status={run.status} />
        </h1>
        <div class="actions">
          {active && (
            <button type="button" class="danger" disabled={busy} onClick={() => setAsking('cancel')}>
              Cancel run
            </button>
          )}
          <button type="button" disabled={busy} onClick={() => setAsking('rerun')}>
            Rerun
          </button>
        </div>
      </div>
      <p class="mono command-line">{run.command}</p>
      {actionError && <p role="alert" class="error">{actionError}</p>}
      {run.waiting && (
        <p class="waiting" role="status">
          <strong>Waiting:</strong> {waitingText(run)}
        </p>
      )}
      {run.workflow && (
        <p>
          Stage <strong>{run.workflow.stage}</strong> of <a href={`/workflows/${run.workflow.id}`}>workflow {run.workflow.id.slice(0, 13)}</a>
        </p>
      )}
      <dl class="facts">
        {facts.map(([label, value]) => (
          <div key={label}>
            <dt>{label}</dt>
            <dd>{value}</dd>
          </div>
        ))}
      </dl>
      <LogView runId={run.id} />
      <UsagePlots runId={run.id} active={active} />
      <Artifacts runId={run.id} ended={!active} />
      <section class="panel" aria-labelledby="record-title">
        <details>
          <summary id="record-title">The whole record (run.json)</summary>
          <pre class="record">{JSON.stringify(run.record, null, 2)}</pre>
        </details>
      </section>
      <ConfirmDialog
        open={asking === 'cancel'}
        title="Cancel this run?"
        confirm="Cancel run"
        dismiss="Keep it running"
        onClose={() => setAsking(undefined)}
        onConfirm={() => void act('cancel')}
      >
        <p>
          <span class="mono">{run.command}</span> gets SIGTERM, then SIGKILL after its grace period. Its log and record are kept.
        </p>
      </ConfirmDialog>
      <ConfirmDialog
        open={asking === 'rerun'}
        title="Run this again?"
        confirm="Rerun"
        dismiss="Do not rerun"
        onClose={() => setAsking(undefined)}
        onConfirm={() => void act('rerun')}
      >
        <p>A new run of the same command, with the same code and settings{run.backend ? `, on ${run.backend}` : ''}.</p>
      </ConfirmDialog>
    </>
  );
}

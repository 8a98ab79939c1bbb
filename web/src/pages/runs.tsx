import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import { api, watchRuns, type CloudRun, type ListFilters } from '../api.js';
import { StatusBadge, isActive } from '../components/status.js';
import { exitText, formatTime, runDuration, shortId, waitingText } from '../format.js';
import { navigate } from '../router.js';
import { useNow } from '../use-now.js';

const STATUSES = ['pending', 'running', 'succeeded', 'failed', 'cancelled', 'lost'];

interface Filters extends ListFilters {
  job?: string;
  workflow?: string;
}

const FILTER_KEYS = ['status', 'backend', 'job', 'workflow', 'q'] as const;

function filtersFrom(search: URLSearchParams): Filters {
  const filters: Filters = {};
  for (const key of FILTER_KEYS) {
    const value = search.get(key);
    if (value) filters[key] = value;
  }
  return filters;
}

/** Whether a run (from the change feed) belongs in the list the filters asked the server for. */
function matches(run: CloudRun, f: Filters): boolean {
  const text = f.q?.toLowerCase();
  return (
    (!f.status || run.status === f.status) &&
    (!f.backend || run.backend === f.backend) &&
    (!f.job || run.job === f.job) &&
    (!f.workflow || run.workflow?.id === f.workflow) &&
    (!text || run.command.toLowerCase().includes(text) || (run.name ?? '').toLowerCase().includes(text))
  );
}

/**
 * The text filter. What is typed is its own state until it is committed
 * (Enter, or leaving the box): the page re-renders every second while runs
 * are active, and an input bound to the committed filter would lose what
 * was typed meanwhile.
 */
function TextFilter({ value, onCommit }: { value: string; onCommit: (q: string) => void }) {
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]);
  return (
    <input
      type="search"
      placeholder="name or command"
      value={draft}
      onInput={(e) => setDraft((e.currentTarget as HTMLInputElement).value)}
      onChange={(e) => onCommit((e.currentTarget as HTMLInputElement).value.trim())}
    />
  );
}

/**
 * Every run this session may see, newest first, live: the list is fetched
 * once per filter and then kept current by the change feed, without
 * reloading. Status, backend and text filter on the server; job and
 * workflow on what was fetched (the newest 200, and more on request).
 */
export function RunsPage({ mode, search }: { mode: 'team' | 'workstation'; search: URLSearchParams }) {
  const filters = useMemo(() => filtersFrom(search), [search.toString()]);
  const [runs, setRuns] = useState<Map<string, CloudRun>>(new Map());
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | undefined>(undefined);
  const [generation, setGeneration] = useState(0);
  const now = useNow(runs.size > 0 && [...runs.values()].some((r) => isActive(r.status)));

  useEffect(() => {
    let stopped = false;
    setLoading(true);
    api.runs(filters).then(
      (page) => {
        if (stopped) return;
        setRuns(new Map(page.runs.map((r) => [r.id, r])));
        setCursor(page.nextCursor);
        setError(undefined);
        setLoading(false);
      },
      (e: Error) => {
        if (stopped) return;
        setError(e.message);
        setLoading(false);
      },
    );
    return () => {
      stopped = true;
    };
  }, [filters, generation]);

  useEffect(
    () =>
      watchRuns(
        (run) =>
          setRuns((current) => {
            const next = new Map(current);
            if (matches(run, filters)) next.set(run.id, run);
            else next.delete(run.id);
            return next;
          }),
        () => setGeneration((g) => g + 1),
      ),
    [filters],
  );

  const more = useCallback(async () => {
    if (!cursor) return;
    try {
      const page = await api.runs(filters, cursor);
      setRuns((current) => new Map([...current, ...page.runs.map((r) => [r.id, r] as const)]));
      setCursor(page.nextCursor);
    } catch (e) {
      setError((e as Error).message);
    }
  }, [cursor, filters]);

  const setFilter = (key: (typeof FILTER_KEYS)[number], value: string): void => {
    const next = new URLSearchParams(search);
    if (value) next.set(key, value);
    else next.delete(key);
    const query = next.toString();
    navigate(query ? `/?${query}` : '/', { replace: true });
  };

  const shown = [...runs.values()].filter((r) => matches(r, filters)).sort((a, b) => (a.id < b.id ? 1 : -1));
  const backends = [...new Set([...runs.values()].map((r) => r.backend).concat(filters.backend ? [filters.backend] : []))].sort();
  const jobs = [...new Set([...runs.values()].flatMap((r) => (r.job ? [r.job] : [])).concat(filters.job ? [filters.job] : []))].sort();
  const workflows = [...new Set([...runs.values()].flatMap((r) => (r.workflow ? [r.workflow.id] : [])).concat(filters.workflow ? [filters.workflow] : []))].sort();
  const counts = STATUSES.map((s) => [s, shown.filter((r) => r.status === s).length] as const).filter(([, n]) => n > 0);

  return (
    <>
      <h1 tabIndex={-1}>Runs</h1>
      <form class="filters" role="search" aria-label="Filter runs" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status
          <select value={filters.status ?? ''} onChange={(e) => setFilter('status', (e.currentTarget as HTMLSelectElement).value)}>
            <option value="">any</option>
            {STATUSES.map((s) => (
              <option key={s} value={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Backend
          <select value={filters.backend ?? ''} onChange={(e) => setFilter('backend', (e.currentTarget as HTMLSelectElement).value)}>
            <option value="">any</option>
            {backends.map((b) => (
              <option key={b} value={b}>{b}</option>
            ))}
          </select>
        </label>
        <label>
          Job
          <select value={filters.job ?? ''} onChange={(e) => setFilter('job', (e.currentTarget as HTMLSelectElement).value)} disabled={jobs.length === 0}>
            <option value="">any</option>
            {jobs.map((j) => (
              <option key={j} value={j}>{j}</option>
            ))}
          </select>
        </label>
        <label>
          Workflow
          <select value={filters.workflow ?? ''} onChange={(e) => setFilter('workflow', (e.currentTarget as HTMLSelectElement).value)} disabled={workflows.length === 0}>
            <option value="">any</option>
            {workflows.map((w) => (
              <option key={w} value={w}>{w.slice(0, 13)}</option>
            ))}
          </select>
        </label>
        <label class="grow">
          Text
          <TextFilter value={filters.q ?? ''} onCommit={(q) => setFilter('q', q)} />
        </label>
      </form>
      <p class="summary" aria-live="polite">
        {loading ? 'Loading…' : `${shown.length} run(s)${cursor ? ' (newest first; more below)' : ''}`}
        {counts.map(([status, n]) => (
          <span key={status} class="count">
            <StatusBadge status={status} /> {n}
          </span>
        ))}
      </p>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="table-wrap">
        <table class="runs">
          <caption class="visually-hidden">Runs, newest first; updated live</caption>
          <thead>
            <tr>
              <th scope="col">Status</th>
              <th scope="col">Run</th>
              <th scope="col" class="wide">Command</th>
              <th scope="col" class="opt">Backend</th>
              <th scope="col" class="opt">Cluster / queue</th>
              {mode === 'team' ? <th scope="col" class="opt">User</th> : <th scope="col" class="opt">Project</th>}
              <th scope="col" class="opt">Started</th>
              <th scope="col" class="num">Duration</th>
              <th scope="col" class="num">Exit</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((run) => (
              <tr key={run.id} data-run-id={run.id} class={`row-${run.status}`}>
                <td>
                  <StatusBadge status={run.status} />
                  {run.waiting && <div class="muted small">{waitingText(run)}</div>}
                </td>
                <td>
                  <a href={`/runs/${run.id}`}>{run.name ?? shortId(run.id)}</a>
                  {run.name && <div class="muted small mono nowrap">{shortId(run.id)}</div>}
                  {run.workflow && (
                    <div class="small">
                      <a href={`/workflows/${run.workflow.id}`}>workflow</a> · {run.workflow.stage}
                    </div>
                  )}
                </td>
                <td class="mono wide command" title={run.command}>{run.command}</td>
                <td class="opt">{run.backend}</td>
                <td class="opt">{[run.cluster, run.queue].filter(Boolean).join(' / ')}</td>
                <td class="opt" title={mode === 'workstation' ? run.target : run.user}>{mode === 'team' ? run.user : projectName(run.target)}</td>
                <td class="opt nowrap">{formatTime(run.startedAt ?? run.createdAt)}</td>
                <td class="num">{runDuration(run, now)}</td>
                <td class="num">{exitText(run)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!loading && shown.length === 0 && <p class="empty">No runs{Object.keys(filters).length > 0 ? ' match these filters' : ' yet'}.</p>}
      {cursor && (
        <button type="button" onClick={() => void more()}>
          Older runs
        </button>
      )}
    </>
  );
}

function projectName(path: string): string {
  return path.split('/').filter(Boolean).pop() ?? path;
}

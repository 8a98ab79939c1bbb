import { useEffect, useState } from 'preact/hooks';
import { api, artifactUrl, type ArtifactList } from '../api.js';
import { formatBytes } from '../format.js';

/** What the run left in its watched directories: path, size, sha256 and a download link each (known once the run ended). */
export function Artifacts({ runId, ended }: { runId: string; ended: boolean }) {
  const [list, setList] = useState<ArtifactList | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);
  useEffect(() => {
    let stopped = false;
    api.artifacts(runId).then(
      (l) => !stopped && setList(l),
      (e: Error) => !stopped && setError(e.message),
    );
    return () => {
      stopped = true;
    };
  }, [runId, ended]);

  let body;
  if (error) body = <p role="alert">The artifacts could not be listed: {error}</p>;
  else if (!list) body = <p class="muted">Loading…</p>;
  else if (list.artifacts.length === 0) body = <p class="muted">{ended ? 'None: the run wrote nothing to its watched directories (out/ by default).' : 'Captured when the run ends.'}</p>;
  else {
    const total = list.artifacts.reduce((sum, a) => sum + a.size, 0);
    body = (
      <div class="table-wrap">
        <table>
          <caption class="visually-hidden">Artifacts of this run</caption>
          <thead>
            <tr>
              <th scope="col">Path</th>
              <th scope="col" class="num">Size</th>
              <th scope="col">sha256</th>
              <th scope="col"><span class="visually-hidden">Download</span></th>
            </tr>
          </thead>
          <tbody>
            {list.artifacts.map((a) => (
              <tr key={a.path}>
                <td class="mono">{a.path}</td>
                <td class="num">{formatBytes(a.size)}</td>
                <td class="mono hash" title={a.sha256}>
                  <span aria-hidden="true">{a.sha256.slice(0, 16)}…</span>
                  <span class="visually-hidden">{a.sha256}</span>
                </td>
                <td>
                  <a href={artifactUrl(runId, a.path)} download={a.path.split('/').pop()} aria-label={`Download ${a.path}`}>
                    Download
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
          <tfoot>
            <tr>
              <td>{list.artifacts.length} file(s)</td>
              <td class="num">{formatBytes(total)}</td>
              <td colSpan={2} />
            </tr>
          </tfoot>
        </table>
      </div>
    );
  }
  return (
    <section class="panel" aria-labelledby="artifacts-title">
      <div class="panel-head">
        <h2 id="artifacts-title">Artifacts</h2>
      </div>
      {body}
      {list && list.skipped.length > 0 && (
        <details>
          <summary>{list.skipped.length} file(s) skipped</summary>
          <ul>
            {list.skipped.map((s) => (
              <li key={s.path}>
                <span class="mono">{s.path}</span>: {s.reason}
              </li>
            ))}
          </ul>
        </details>
      )}
      {list?.error && <p role="alert">Capture failed part-way: {list.error}</p>}
    </section>
  );
}

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef, useState } from 'preact/hooks';
import { followLog, logUrl, type LogStream } from '../api.js';

type Shown = 'both' | LogStream;

/**
 * A run's log as a terminal shows it (xterm.js): colours, cursor movement,
 * and a `\r` progress bar redrawn in place on one line. Both streams are
 * written into it in the order they arrive, as on a terminal. Following can
 * be stopped and resumed: it carries on from the byte it stopped at.
 */
export function LogView({ runId }: { runId: string }) {
  const host = useRef<HTMLDivElement>(null);
  const terminal = useRef<Terminal | null>(null);
  const offsets = useRef<Record<LogStream, number>>({ stdout: 0, stderr: 0 });
  const [shown, setShown] = useState<Shown>('both');
  const [following, setFollowing] = useState(true);
  const [ended, setEnded] = useState(false);
  const [screenReader, setScreenReader] = useState(false);

  useEffect(() => {
    if (!host.current) return undefined;
    const term = new Terminal({
      convertEol: true, // a log holds "\n" alone, where a terminal's driver would have sent "\r\n"
      disableStdin: true,
      scrollback: 20_000,
      fontSize: 13,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
      theme: { background: '#14171c', foreground: '#e8eaed', cursor: '#14171c' },
      cursorBlink: false,
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(host.current);
    fit.fit();
    const resized = new ResizeObserver(() => fit.fit());
    resized.observe(host.current);
    terminal.current = term;
    return () => {
      resized.disconnect();
      term.dispose();
      terminal.current = null;
    };
  }, []);

  useEffect(() => {
    if (terminal.current) terminal.current.options.screenReaderMode = screenReader;
  }, [screenReader]);

  // Another stream choice (or run) starts again from the first byte.
  useEffect(() => {
    terminal.current?.reset();
    offsets.current = { stdout: 0, stderr: 0 };
    setEnded(false);
  }, [shown, runId]);

  useEffect(() => {
    if (!following || ended) return undefined;
    const streams: LogStream[] = shown === 'both' ? ['stdout', 'stderr'] : [shown];
    let open = streams.length;
    const closers = streams.map((stream) =>
      followLog(runId, stream, offsets.current[stream], {
        onBytes: (bytes, next) => {
          terminal.current?.write(bytes);
          offsets.current[stream] = next;
        },
        onDone: () => {
          if (--open === 0) setEnded(true);
        },
      }),
    );
    return () => closers.forEach((close) => close());
  }, [following, shown, runId, ended]);

  return (
    <section class="panel" aria-labelledby="log-title">
      <div class="panel-head">
        <h2 id="log-title">Log</h2>
        <div class="toolbar">
          <label>
            Streams{' '}
            <select value={shown} onChange={(e) => setShown((e.currentTarget as HTMLSelectElement).value as Shown)}>
              <option value="both">stdout and stderr</option>
              <option value="stdout">stdout</option>
              <option value="stderr">stderr</option>
            </select>
          </label>
          <button type="button" aria-pressed={following && !ended} disabled={ended} onClick={() => setFollowing(!following)}>
            {ended ? 'Whole log shown' : following ? 'Stop following' : 'Follow'}
          </button>
          <a class="button" href={logUrl(runId, 'stdout')} download={`${runId}-stdout.log`}>Download stdout</a>
          <a class="button" href={logUrl(runId, 'stderr')} download={`${runId}-stderr.log`}>Download stderr</a>
          <label class="check">
            <input type="checkbox" checked={screenReader} onChange={(e) => setScreenReader((e.currentTarget as HTMLInputElement).checked)} /> Screen reader mode
          </label>
        </div>
      </div>
      <div class="terminal" ref={host} role="log" aria-label="the run's output, as a terminal shows it" data-testid="log" />
      <p class="muted" aria-live="polite">{ended ? 'The run ended: this is its whole log.' : following ? 'Following: new output appears as it is written.' : 'Not following: press Follow to carry on where it stopped.'}</p>
    </section>
  );
}

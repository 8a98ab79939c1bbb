import uPlot from 'uplot';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type RunUsage } from '../api.js';
import { formatBytes } from '../format.js';

/** Between two fetches of new samples while the run is active (the sampler writes one a second at most). */
const REFRESH_MS = 3000;
const PLOT_HEIGHT = 180;

interface Series {
  label: string;
  /** For the axis and the legend. */
  format: (value: number) => string;
  color: string;
}

/** One time series chart (uPlot), as wide as its container, with a text summary for those who cannot see it. */
function Plot({ title, times, values, series, summary }: { title: string; times: number[]; values: (number | null)[][]; series: Series[]; summary: string }) {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!host.current) return undefined;
    const chart = new uPlot(
      {
        width: Math.max(200, host.current.clientWidth),
        height: PLOT_HEIGHT,
        series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, width: 2, value: (_u: uPlot, v: number | null) => (v === null ? '' : s.format(v)) }))],
        axes: [{ stroke: 'currentColor' }, { stroke: 'currentColor', size: 70, values: (_u: uPlot, ticks: number[]) => ticks.map((t) => series[0]!.format(t)) }],
        scales: { x: { time: true } },
        legend: { live: true },
      },
      [times, ...values] as uPlot.AlignedData,
      host.current,
    );
    plot.current = chart;
    const resized = new ResizeObserver(() => chart.setSize({ width: Math.max(200, host.current?.clientWidth ?? 200), height: PLOT_HEIGHT }));
    resized.observe(host.current);
    return () => {
      resized.disconnect();
      chart.destroy();
      plot.current = null;
    };
  }, [series.length]);
  useEffect(() => {
    plot.current?.setData([times, ...values] as uPlot.AlignedData);
  }, [times, values]);
  return (
    <figure class="plot">
      <figcaption>{title}</figcaption>
      <div ref={host} role="img" aria-label={`${title}: ${summary}`} />
      <p class="muted">{summary}</p>
    </figure>
  );
}

/**
 * The run's CPU and memory over time (and its GPUs', when it holds some),
 * from the samples its supervisor kept; new samples are fetched while it runs.
 */
export function UsagePlots({ runId, active }: { runId: string; active: boolean }) {
  const [usage, setUsage] = useState<RunUsage | undefined>(undefined);
  const [error, setError] = useState<string | undefined>(undefined);

  useEffect(() => {
    let stopped = false;
    let timer: number | undefined;
    let have: RunUsage = { samples: [], gpu: [] };
    const last = (): string | undefined => [have.samples.at(-1)?.t, have.gpu.at(-1)?.t].filter((t): t is string => t !== undefined).sort().at(-1);
    const fetchMore = async (): Promise<void> => {
      try {
        const more = await api.usage(runId, last());
        if (stopped) return;
        if (more.samples.length > 0 || more.gpu.length > 0 || have.samples.length === 0) {
          have = { samples: [...have.samples, ...more.samples], gpu: [...have.gpu, ...more.gpu] };
          setUsage(have);
        }
        setError(undefined);
      } catch (e) {
        if (!stopped) setError((e as Error).message);
      }
      if (!stopped && active) timer = window.setTimeout(() => void fetchMore(), REFRESH_MS);
    };
    void fetchMore();
    return () => {
      stopped = true;
      window.clearTimeout(timer);
    };
  }, [runId, active]);

  let body;
  if (error) body = <p role="alert">Usage could not be read: {error}</p>;
  else if (!usage) body = <p class="muted">Loading…</p>;
  else if (usage.samples.length === 0 && usage.gpu.length === 0) body = <p class="muted">No samples: runs are sampled while their command runs on this machine (local and Docker runs), from a second after start.</p>;
  else body = <Charts usage={usage} />;
  return (
    <section class="panel" aria-labelledby="usage-title">
      <div class="panel-head">
        <h2 id="usage-title">CPU and memory</h2>
      </div>
      {body}
    </section>
  );
}

const percent = (v: number): string => `${v.toFixed(0)}%`;
const bytes = (v: number): string => formatBytes(Math.max(0, Math.round(v)));
const megabytes = (v: number): string => formatBytes(Math.max(0, Math.round(v * 1024 * 1024)));
const COLORS = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];

function Charts({ usage }: { usage: RunUsage }) {
  const times = usage.samples.map((s) => Date.parse(s.t) / 1000);
  const cpu = usage.samples.map((s) => s.cpu);
  const rss = usage.samples.map((s) => s.rss);
  const gpuTimes = usage.gpu.map((g) => Date.parse(g.t) / 1000);
  const gpuIndexes = [...new Set(usage.gpu.flatMap((g) => g.gpus.map((x) => x.index)))].sort((a, b) => a - b);
  const gpuValue = (key: 'utilizationPercent' | 'memoryUsedMb') => gpuIndexes.map((index) => usage.gpu.map((g) => g.gpus.find((x) => x.index === index)?.[key] ?? null));
  const peak = (values: number[]): number => values.reduce((a, b) => Math.max(a, b), 0);
  return (
    <div class="plots">
      {times.length > 0 && (
        <>
          <Plot title="CPU (percent of one core)" times={times} values={[cpu]} series={[{ label: 'CPU', format: percent, color: COLORS[0]! }]} summary={`${cpu.length} samples; peak ${percent(peak(cpu))}, last ${percent(cpu.at(-1) ?? 0)}`} />
          <Plot title="Memory (resident)" times={times} values={[rss]} series={[{ label: 'RSS', format: bytes, color: COLORS[1]! }]} summary={`peak ${bytes(peak(rss))}, last ${bytes(rss.at(-1) ?? 0)}`} />
        </>
      )}
      {gpuTimes.length > 0 && (
        <>
          <Plot
            title="GPU utilisation"
            times={gpuTimes}
            values={gpuValue('utilizationPercent')}
            series={gpuIndexes.map((index, i) => ({ label: `GPU ${index}`, format: percent, color: COLORS[i % COLORS.length]! }))}
            summary={`${gpuIndexes.length} GPU(s), ${gpuTimes.length} samples`}
          />
          <Plot
            title="GPU memory"
            times={gpuTimes}
            values={gpuValue('memoryUsedMb')}
            series={gpuIndexes.map((index, i) => ({ label: `GPU ${index}`, format: megabytes, color: COLORS[i % COLORS.length]! }))}
            summary={`peak ${megabytes(peak(usage.gpu.flatMap((g) => g.gpus.map((x) => x.memoryUsedMb ?? 0))))}`}
          />
        </>
      )}
    </div>
  );
}

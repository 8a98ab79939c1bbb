import type { WorkflowView } from '../api.js';

type Stage = WorkflowView['stages'][number];

const NODE_W = 168;
const NODE_H = 56;
const GAP_X = 64;
const GAP_Y = 24;
const PAD = 12;

/**
 * Columns of stages: a stage sits one column right of the furthest stage it
 * needs (its depth), so every edge points right. A workflow is a handful of
 * stages, so this layered layout is a few lines here rather than a graph
 * layout library in the bundle. A `needs` naming no stage is drawn as none;
 * a cycle (refused when the workflow is submitted) cannot loop here.
 */
export function layout(stages: Stage[]): { positions: Map<string, { x: number; y: number }>; width: number; height: number } {
  const byName = new Map(stages.map((s) => [s.name, s]));
  const depth = new Map<string, number>();
  const depthOf = (name: string, seen: Set<string>): number => {
    const known = depth.get(name);
    if (known !== undefined) return known;
    if (seen.has(name)) return 0;
    seen.add(name);
    const needs = (byName.get(name)?.needs ?? []).filter((n) => byName.has(n));
    const d = needs.length === 0 ? 0 : 1 + Math.max(...needs.map((n) => depthOf(n, seen)));
    depth.set(name, d);
    return d;
  };
  const columns: string[][] = [];
  for (const stage of stages) (columns[depthOf(stage.name, new Set())] ??= []).push(stage.name);
  const positions = new Map<string, { x: number; y: number }>();
  columns.forEach((column, c) => column.forEach((name, r) => positions.set(name, { x: PAD + c * (NODE_W + GAP_X), y: PAD + r * (NODE_H + GAP_Y) })));
  const rows = Math.max(1, ...columns.map((c) => c?.length ?? 0));
  return { positions, width: PAD * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * GAP_X, height: PAD * 2 + rows * NODE_H + (rows - 1) * GAP_Y };
}

/** The stages as a graph: a box per stage (its state in colour and in words, a link to its run), an arrow per `needs`. */
export function WorkflowGraph({ workflow }: { workflow: WorkflowView }) {
  const { positions, width, height } = layout(workflow.stages);
  return (
    <div class="graph-wrap">
      <svg class="graph" viewBox={`0 0 ${width} ${height}`} width={width} height={height} role="img" aria-labelledby="graph-title">
        <title id="graph-title">{`Stages of workflow ${workflow.id}: ${workflow.stages.map((s) => `${s.name} ${s.status}`).join(', ')}`}</title>
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">
            <path d="M 0 0 L 10 5 L 0 10 z" class="edge-head" />
          </marker>
        </defs>
        {workflow.stages.flatMap((stage) =>
          stage.needs.flatMap((need) => {
            const from = positions.get(need);
            const to = positions.get(stage.name);
            if (!from || !to) return [];
            const x1 = from.x + NODE_W;
            const y1 = from.y + NODE_H / 2;
            const x2 = to.x;
            const y2 = to.y + NODE_H / 2;
            const mid = (x1 + x2) / 2;
            return [<path key={`${need}->${stage.name}`} class="edge" d={`M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`} marker-end="url(#arrow)" />];
          }),
        )}
        {workflow.stages.map((stage) => {
          const at = positions.get(stage.name)!;
          const box = (
            <g class={`node node-${stage.status}`} data-stage={stage.name}>
              <rect x={at.x} y={at.y} width={NODE_W} height={NODE_H} rx={8} />
              <text x={at.x + 12} y={at.y + 22} class="node-name">{stage.name}</text>
              <text x={at.x + 12} y={at.y + 42} class="node-status">
                {stage.status}
                {stage.exitCode !== null ? ` · exit ${stage.exitCode}` : ''}
              </text>
            </g>
          );
          return stage.runId ? (
            <a key={stage.name} href={`/runs/${stage.runId}`} aria-label={`stage ${stage.name}: ${stage.status}; open its run`}>
              {box}
            </a>
          ) : (
            <g key={stage.name}>{box}</g>
          );
        })}
      </svg>
    </div>
  );
}

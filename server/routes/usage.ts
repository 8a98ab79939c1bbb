import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyPluginAsync } from 'fastify';
import type { GpuPoint, RunUsage, UsagePoint } from '../../src/cloud/api.js';
import { errnoCode } from '../../src/errors.js';
import { RunFiles } from '../../src/paths.js';
import type { ApiServices } from '../runs-source.js';
import { errorResponses, runIdParams } from '../schemas.js';

/**
 * Where GPU samples may also be, besides usage.jsonl's lines with a `gpus`
 * field: the GPU sampler of issue 21 writes a file of its own. Both are read.
 */
const GPU_USAGE_FILE = 'gpu-usage.jsonl';

const nullableNumber = { type: ['number', 'null'] };

/** A run's CPU and memory over time, sampled by its supervisor and kept in its directory, for the dashboard's plots. */
export const usageRoutes: FastifyPluginAsync<{ services: ApiServices }> = async (app, { services }) => {
  app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/runs/:id/usage', {
    schema: {
      tags: ['runs'],
      summary: 'A run\'s CPU, memory (and GPU) samples over time, oldest first (empty for runs whose backend is not sampled)',
      params: runIdParams,
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { after: { type: 'string', format: 'date-time', description: 'only samples taken after this time (what a page that has the rest asks for)' } },
      },
      response: {
        200: {
          type: 'object',
          required: ['samples', 'gpu'],
          properties: {
            samples: {
              type: 'array',
              items: {
                type: 'object',
                required: ['t', 'cpu', 'rss', 'procs'],
                properties: {
                  t: { type: 'string', format: 'date-time' },
                  cpu: { type: 'number', description: 'percent of one CPU, summed over the run\'s processes' },
                  rss: { type: 'integer', description: 'resident memory, bytes' },
                  procs: { type: 'integer' },
                },
              },
            },
            gpu: {
              type: 'array',
              items: {
                type: 'object',
                required: ['t', 'gpus'],
                properties: {
                  t: { type: 'string', format: 'date-time' },
                  gpus: {
                    type: 'array',
                    items: {
                      type: 'object',
                      required: ['index', 'utilizationPercent', 'memoryUsedMb', 'memoryTotalMb'],
                      properties: { index: { type: 'integer' }, utilizationPercent: nullableNumber, memoryUsedMb: nullableNumber, memoryTotalMb: nullableNumber },
                    },
                  },
                },
              },
            },
          },
        },
        ...errorResponses,
      },
    },
  }, async (request) => {
    const { dir } = await services.source.locate(request.principal, request.params.id);
    const after = request.query.after === undefined ? undefined : Date.parse(request.query.after);
    return readUsage(dir, after);
  });
};

/** The samples in a run directory, skipping lines that are not samples (a line torn by a crash mid-write). */
export async function readUsage(dir: string, after?: number): Promise<RunUsage> {
  const usage: RunUsage = { samples: [], gpu: [] };
  const keep = (t: string): boolean => after === undefined || Date.parse(t) > after;
  for (const value of await readLines(join(dir, RunFiles.usage))) {
    const sample = usagePoint(value);
    if (sample && keep(sample.t)) usage.samples.push(sample);
    const gpu = gpuPoint(value);
    if (gpu && keep(gpu.t)) usage.gpu.push(gpu);
  }
  for (const value of await readLines(join(dir, GPU_USAGE_FILE))) {
    const gpu = gpuPoint(value);
    if (gpu && keep(gpu.t)) usage.gpu.push(gpu);
  }
  usage.gpu.sort((a, b) => Date.parse(a.t) - Date.parse(b.t));
  return usage;
}

async function readLines(path: string): Promise<unknown[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return [];
    throw error;
  }
  return text.split('\n').flatMap((line) => {
    if (line.trim() === '') return [];
    try {
      return [JSON.parse(line) as unknown];
    } catch {
      return []; // a line torn by a crash mid-append, or being appended now: one point fewer
    }
  });
}

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const orNull = (v: unknown): number | null => (isNumber(v) ? v : null);

function timeOf(value: Record<string, unknown>): string | undefined {
  const t = value.t ?? value.at;
  return typeof t === 'string' && !Number.isNaN(Date.parse(t)) ? t : undefined;
}

function usagePoint(value: unknown): UsagePoint | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const t = timeOf(v);
  if (t === undefined || !isNumber(v.cpu) || !isNumber(v.rss)) return undefined;
  return { t, cpu: v.cpu, rss: Math.round(v.rss), procs: isNumber(v.procs) ? Math.round(v.procs) : 0 };
}

/** A GPU sample in either writer's words (utilizationPercent or utilization, memoryUsedMb or memoryMb). */
function gpuPoint(value: unknown): GpuPoint | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const t = timeOf(v);
  if (t === undefined || !Array.isArray(v.gpus)) return undefined;
  const gpus = v.gpus.flatMap((g: unknown, i: number) => {
    if (typeof g !== 'object' || g === null) return [];
    const gpu = g as Record<string, unknown>;
    return [{
      index: isNumber(gpu.index) ? gpu.index : i,
      utilizationPercent: orNull(gpu.utilizationPercent ?? gpu.utilization),
      memoryUsedMb: orNull(gpu.memoryUsedMb ?? gpu.memoryMb),
      memoryTotalMb: orNull(gpu.memoryTotalMb),
    }];
  });
  return gpus.length > 0 ? { t, gpus } : undefined;
}

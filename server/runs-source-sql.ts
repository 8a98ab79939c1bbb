import type { Readable } from 'node:stream';
import type { ArtifactEntry, ArtifactList, CloudRun, CloudRunDetail, RunPage, RunQuery, WorkflowView } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import type { Run } from '../src/run/model.js';
import type { BlobStore } from './blob-store.js';
import type { RunRow } from './db/schema.js';
import type { RunService } from './run-service.js';
import { toCloudRun } from './run-table.js';
import { runExtras, type RunsSource } from './runs-source.js';
import type { Principal } from './tokens.js';

/** Finds a workflow a principal may see; undefined when there is none. */
export type WorkflowLookup = (principal: Principal, id: string) => Promise<WorkflowView | undefined>;

/** The error for a workflow that cannot be shown: none by that id, or no workflows on this server yet. */
export function workflowNotFound(id: string, available: boolean): QwexError {
  return available
    ? new QwexError(ErrorCode.NotFound, `no workflow ${id}`, { hint: 'GET /v1/runs lists runs with the workflow each belongs to' })
    : new QwexError(ErrorCode.NotFound, `no workflow ${id}: this server has no workflows yet`, { hint: 'workflows come with `qwex workflow run` (docs/dashboard.md)' });
}

/** qwexcloud's runs, from SQL (and its content store for artifacts), for the route handlers. */
export class SqlRunsSource implements RunsSource {
  constructor(
    private readonly runs: RunService,
    private readonly blobs: BlobStore,
    private readonly workflows?: WorkflowLookup,
  ) {}

  async list(principal: Principal, query: RunQuery): Promise<RunPage> {
    const page = await this.runs.list(principal, query);
    return { runs: page.rows.map(listed), nextCursor: page.nextCursor };
  }

  async detail(principal: Principal, id: string): Promise<CloudRunDetail> {
    return withExtras(await this.runs.detail(principal, id));
  }

  async cancel(principal: Principal, id: string, graceMs?: number): Promise<CloudRunDetail> {
    return withExtras(await this.runs.cancel(principal, id, graceMs));
  }

  async rerun(principal: Principal, id: string): Promise<CloudRunDetail> {
    return withExtras(await this.runs.rerun(principal, id));
  }

  async locate(principal: Principal, id: string): Promise<{ dir: string; run: CloudRun }> {
    const row = await this.runs.row(principal, id);
    return { dir: row.run_dir, run: listed(row) };
  }

  artifacts(principal: Principal, id: string): Promise<ArtifactList> {
    return this.runs.artifacts(principal, id);
  }

  async openArtifact(principal: Principal, id: string, path: string): Promise<{ entry: ArtifactEntry; content: Readable }> {
    const entry = await this.runs.artifact(principal, id, path);
    const blob = this.blobs.open(entry.sha256);
    if (!blob) throw new QwexError(ErrorCode.NotFound, `the content of artifact "${path}" is missing from the server's store`, { hint: 'the data directory was damaged or restored partly; see the server\'s log' });
    return { entry: { ...entry, size: blob.size }, content: blob.stream };
  }

  async workflow(principal: Principal, id: string): Promise<WorkflowView> {
    const found = await this.workflows?.(principal, id);
    if (!found) throw workflowNotFound(id, this.workflows !== undefined);
    return found;
  }

  onChange(listener: (run: CloudRun) => void): () => void {
    return this.runs.onChange((row) => listener(listed(row)));
  }

  onRunChange(id: string, listener: (run: CloudRun) => void): () => void {
    return this.runs.onRunChange(id, (row) => listener(listed(row)));
  }
}

function listed(row: RunRow): CloudRun {
  return { ...toCloudRun(row), ...runExtras(JSON.parse(row.record) as Run) };
}

function withExtras(detail: CloudRunDetail): CloudRunDetail {
  return { ...detail, ...runExtras(detail.record) };
}

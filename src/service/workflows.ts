import { DaemonClient } from '../daemon-client.js';
import { startDaemon } from '../daemon-process.js';
import { ErrorCode, QwexError } from '../errors.js';
import { Method, type Params } from '../protocol.js';
import type { RunStore } from '../store/run-store.js';
import type { WorkflowView } from '../workflow/types.js';
import { DaemonRunService } from './daemon.js';
import type { RunService } from './run-service.js';

/**
 * Workflows through qwexd, which supervises them (started on demand, as
 * `qwex submit` starts it). When qwexd goes away mid-way (stopped, or
 * killed), the next request starts it again: it picks every workflow up
 * from disk. `runs` follows stage runs.
 */
export class WorkflowService {
  private constructor(
    private client: DaemonClient,
    private runService: DaemonRunService,
    private readonly store: RunStore,
  ) {}

  static async open(store: RunStore, options: { onStart?: (pid: number) => void } = {}): Promise<WorkflowService> {
    if (process.env.QWEX_NO_DAEMON === '1') {
      throw new QwexError(ErrorCode.DaemonUnavailable, 'workflows are supervised by qwexd, and QWEX_NO_DAEMON=1 is set', { hint: 'unset QWEX_NO_DAEMON' });
    }
    const client = await connect(options.onStart);
    return new WorkflowService(client, new DaemonRunService(client, store), store);
  }

  get runs(): RunService {
    return this.runService;
  }

  submit(params: Params<'workflow.submit'>): Promise<WorkflowView> {
    return this.request((c) => c.request(Method.workflowSubmit, params), false);
  }

  get(ref: { id: string; project?: string }): Promise<WorkflowView> {
    return this.request((c) => c.request(Method.workflowGet, ref));
  }

  async list(query: { project?: string; limit?: number }): Promise<WorkflowView[]> {
    return (await this.request((c) => c.request(Method.workflowList, query))).workflows;
  }

  cancel(ref: { id: string; project?: string }): Promise<WorkflowView> {
    return this.request((c) => c.request(Method.workflowCancel, ref));
  }

  retry(ref: { id: string; project?: string }, env: Record<string, string>): Promise<WorkflowView> {
    return this.request((c) => c.request(Method.workflowRetry, { ...ref, env }), false);
  }

  async close(): Promise<void> {
    await this.runService.close();
  }

  /** A request, made again once through a newly started qwexd when the one we spoke to is gone (`idempotent` requests only). */
  private async request<T>(call: (client: DaemonClient) => Promise<T>, idempotent = true): Promise<T> {
    try {
      return await call(this.client);
    } catch (error) {
      if (!idempotent || !(error instanceof QwexError) || error.code !== ErrorCode.DaemonUnavailable) throw error;
    }
    await this.runService.close();
    this.client = await connect();
    this.runService = new DaemonRunService(this.client, this.store);
    return call(this.client);
  }
}

async function connect(onStart?: (pid: number) => void): Promise<DaemonClient> {
  const running = await DaemonClient.connectIfRunning();
  if (running) return running;
  const started = await startDaemon();
  if (!started.alreadyRunning) onStart?.(started.pid);
  return DaemonClient.connect();
}

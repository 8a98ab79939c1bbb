import { loadConfig } from '../config/config.js';
import type { Supervisor } from '../run/supervisor.js';
import type { RunStore } from '../store/run-store.js';
import { resolveNotify } from './resolve.js';
import { notifyJournalPath } from './deliveries.js';
import { FileJournal } from './file-journal.js';
import { KEEP_MS, Notifier, type NotifyLog } from './notifier.js';
import { workflowPayload, type WorkflowEnd } from './payload.js';
import { RunEvents } from './run-events.js';
import { DEFAULT_RETRY_FOR_MS, describeTarget, type NotifyEvent, type NotifySpec } from './spec.js';

const END_EVENTS: readonly NotifyEvent[] = ['succeeded', 'failed', 'cancelled', 'lost'];

/**
 * Notifications on one machine: qwexd tells people when runs end (and
 * workflows, and runs that wait too long), through the targets each job's
 * spec names. See docs/notifications.md.
 */
export type { NotifySpec, NotifyTarget, NotifyEvent } from './spec.js';
export type { WorkflowEnd, EventPayload } from './payload.js';
export { verifySignature, signatureHeader, SIGNATURE_HEADER, DELIVERY_HEADER } from './signature.js';

export interface Notifications {
  readonly notifier: Notifier;
  close(): Promise<void>;
}

/** The notifier of this process, when it runs one (qwexd): events journalled here are delivered at once. */
let active: { journal: FileJournal; notifier: Notifier } | undefined;

/**
 * Starts qwexd's notifications: opens the journal in the state directory,
 * resumes what was left pending, listens to the supervisor's submissions
 * (the submitter's secrets) and run ends, and scans for ends nobody saw.
 * Never throws for a target's sake; only a journal that cannot be opened
 * fails it (the caller logs that and serves on without notifications).
 */
export async function attachNotifications(supervisor: Supervisor, store: RunStore, log: NotifyLog): Promise<Notifications> {
  const file = await FileJournal.open(notifyJournalPath());
  const notifier = new Notifier({
    journal: file.journal,
    log,
    submitterSecrets: (subject) => file.secrets(subject),
    // Kept values serve every event of a run: they go once its end is journalled and nothing is pending.
    settled: async (subject) => {
      if (await file.journal.seen(subject, END_EVENTS)) await file.forgetSecrets(subject);
    },
    cwdOf: (row) => row.owner,
  });
  const events = new RunEvents({ notifier, store, log, secrets: file });
  await file.pruneSecrets(new Date(Date.now() - KEEP_MS)).catch((error: unknown) => log('warn', 'notify-prune-failed', { message: (error as Error).message }));
  const offSubmitted = supervisor.onSubmitted((runs, env) => void events.submitted(runs, env));
  const offEnded = supervisor.onRunEnd((_dir, run) => void events.ended(run));
  active = { journal: file, notifier };
  events.start();
  let closing: Promise<void> | undefined;
  return {
    notifier,
    close: () =>
      (closing ??= (async () => {
        offSubmitted();
        offEnded();
        if (active?.notifier === notifier) active = undefined;
        await events.close();
        await notifier.close();
        await file.close();
      })()),
  };
}

/**
 * Tells a workflow's targets that it ended (the `workflow` event), for the
 * code that supervises workflows to call once, when it records the end.
 * `notify` is the workflow's spec; without it, the project's configuration
 * decides (its targets that fire on `workflow`). The event is journalled
 * once (a second call for the same workflow does nothing) and delivered by
 * this process's notifier, or else by qwexd's (it looks at the journal every
 * 30 s, and at its next start). Resolves with whether it was journalled now.
 */
export async function notifyWorkflowEnd(workflow: WorkflowEnd, options: { notify?: NotifySpec } = {}): Promise<boolean> {
  const spec = options.notify ?? resolveNotify((await loadConfig(workflow.project)).config.notify);
  const targets = (spec?.targets ?? []).filter((t) => t.on.includes('workflow'));
  const own = active;
  const file = own?.journal ?? (await FileJournal.open(notifyJournalPath()));
  try {
    if (targets.length === 0) {
      await file.journal.markSeen(workflow.id, 'workflow');
      return false;
    }
    const event = {
      subject: workflow.id,
      event: 'workflow' as const,
      owner: workflow.project,
      payload: workflowPayload(workflow, spec?.dashboardUrl),
      targets: targets.map((target) => ({ target, shown: describeTarget(target) })),
      retryForMs: spec?.retryForMs ?? DEFAULT_RETRY_FOR_MS,
    };
    return own ? await own.notifier.record(event) : await file.journal.record(event);
  } finally {
    if (!own) await file.close();
  }
}

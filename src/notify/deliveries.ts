import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { stateDir } from '../paths.js';
import { deliveryInfo, type DeliveryInfo } from './journal.js';

/** Where qwexd journals its deliveries: notify.db in the state directory. */
export function notifyJournalPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(stateDir(env), 'notify.db');
}

/**
 * A run's (or workflow's) deliveries, oldest first, as `qwex status` shows
 * them: read from the journal when there is one, without creating it (and
 * without loading the database layer when there is none).
 */
export async function deliveriesOf(subject: string, path: string = notifyJournalPath()): Promise<DeliveryInfo[]> {
  if (!existsSync(path)) return [];
  const { FileJournal } = await import('./file-journal.js');
  let file: Awaited<ReturnType<typeof FileJournal.open>>;
  try {
    file = await FileJournal.open(path, { readonly: true });
  } catch {
    return []; // a journal that cannot be read now (a newer qwex's, a disk error) must not stop `qwex status`
  }
  try {
    return (await file.journal.list({ subject })).map(deliveryInfo).reverse();
  } catch {
    return []; // as above: a journal that cannot be read now must not stop `qwex status`
  } finally {
    await file.close();
  }
}

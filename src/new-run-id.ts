import { v7 as uuidv7 } from 'uuid';

/** Run ids are UUIDv7: time-ordered, so sorting ids (and `ls .qwex/runs/`) is chronological. */
export function newRunId(): string {
  return uuidv7();
}

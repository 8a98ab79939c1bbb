import type { EventPayload } from '../payload.js';

/** Where a target's secrets come from at the moment of an attempt. */
export interface SecretSource {
  /** A variable: the submitter's (kept with the event) or else the supervisor's own environment. */
  env(name: string): string | undefined;
  /** A file's content without its trailing newline; undefined when it cannot be read. */
  file(path: string): string | undefined;
}

/** One attempt at delivering one event to one target. */
export interface Attempt {
  /** The delivery's id: the same for every attempt, so a receiver can drop a copy. */
  delivery: string;
  payload: EventPayload;
  secrets: SecretSource;
  /** Aborted when the notifier closes. */
  signal: AbortSignal;
}

/**
 * Run ids: how they look and how they are shown. New ones come from
 * new-run-id.ts, apart so that reading runs (`qwex ps`) does not load
 * node:crypto for the random part of ids it never makes.
 */

const RUN_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

export function isRunId(value: string): boolean {
  return RUN_ID.test(value);
}

/** A prefix a person may type: hex digits and dashes only (also keeps it safe in a LIKE or a path). */
export function isIdPrefix(value: string): boolean {
  return value.length > 0 && value.length <= 36 && /^[0-9a-f-]+$/.test(value);
}

/** The short form shown to people: 13 characters carry the millisecond timestamp. */
export function shortId(id: string): string {
  return id.slice(0, 13);
}

/**
 * The shortest length (at least `min`) at which every id of a listing is
 * still distinct, so a table never shows two rows with the same short id.
 */
export function distinctPrefixLength(ids: readonly string[], min = 13): number {
  const sorted = [...ids].sort();
  let length = min;
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    let common = 0;
    while (common < a.length && a[common] === b[common]) common++;
    length = Math.max(length, common + 1);
  }
  return Math.min(length, 36);
}

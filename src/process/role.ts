/**
 * Whether this process lives long and starts many runs (qwexd), as opposed
 * to a CLI or a per-run monitor that starts one. Backends use it to decide
 * whether a helper process that makes later starts cheaper is worth starting.
 */
let longLived = false;

export function declareLongLived(): void {
  longLived = true;
}

export function isLongLived(): boolean {
  return longLived;
}

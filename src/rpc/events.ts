/** Something that can be stopped or released; calling dispose twice is harmless. */
export interface Disposable {
  dispose(): void;
}

export function disposable(dispose: () => void): Disposable {
  let done = false;
  return {
    dispose: () => {
      if (done) return;
      done = true;
      dispose();
    },
  };
}

/**
 * A typed event with subscribers, as vscode-jsonrpc's Emitter: `event`
 * subscribes and returns what unsubscribes. Listeners run in subscription
 * order; one that throws does not keep the others from running, and its
 * error is rethrown to whoever fired once they all ran.
 */
export class Emitter<T> {
  private readonly listeners = new Set<(value: T) => void>();

  readonly event = (listener: (value: T) => void): Disposable => {
    // A wrapper per subscription, so that one function subscribed twice is two subscriptions.
    const entry = (value: T): void => listener(value);
    this.listeners.add(entry);
    return disposable(() => this.listeners.delete(entry));
  };

  fire(value: T): void {
    let failure: { error: unknown } | undefined;
    for (const listener of [...this.listeners]) {
      try {
        listener(value);
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure) throw failure.error;
  }

  clear(): void {
    this.listeners.clear();
  }
}

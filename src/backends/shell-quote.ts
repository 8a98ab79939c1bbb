/** One word for a POSIX shell, whatever it contains: single-quoted, with single quotes spelled '\''. Shared by the backends that run shell lines remotely. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * Styling decided once per stream: symbols only on a TTY; colour on a TTY
 * unless NO_COLOR is set, TERM=dumb or --no-color was given; FORCE_COLOR
 * (as Node and most tools read it) turns colour on even in a pipe, or off
 * with 0 / false. --no-color wins over both.
 */
export interface Style {
  tty: boolean;
  color: boolean;
  /** The terminal's width in columns, when the stream is a terminal: tables fit it. */
  width?: number;
}

let colourOff = false;

/** --no-color: no colour on any stream for the rest of this process, whatever the environment says. */
export function disableColour(): void {
  colourOff = true;
}

/** FORCE_COLOR's verdict: true (force on), false (force off), or undefined (not set, or a value we do not know). */
function forcedColour(env: NodeJS.ProcessEnv): boolean | undefined {
  const value = env.FORCE_COLOR;
  if (value === undefined) return undefined;
  if (['', '1', '2', '3', 'true'].includes(value)) return true;
  if (['0', 'false'].includes(value)) return false;
  return undefined;
}

export function wantsColour(tty: boolean, env: NodeJS.ProcessEnv = process.env): boolean {
  if (colourOff) return false;
  const forced = forcedColour(env);
  if (forced !== undefined) return forced;
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  return tty && env.TERM !== 'dumb';
}

export function styleFor(stream: NodeJS.WriteStream): Style {
  const tty = stream.isTTY === true;
  const width = tty && typeof stream.columns === 'number' && stream.columns > 0 ? stream.columns : undefined;
  return { tty, color: wantsColour(tty), ...(width === undefined ? {} : { width }) };
}

/** Whether the progress line (progress.ts) is drawn: on a terminal only, never under --quiet or --json. */
export function showsProgress(options: { quiet?: boolean; json?: boolean }, stream: NodeJS.WriteStream = process.stderr): boolean {
  return stream.isTTY === true && !options.quiet && !options.json && process.env.TERM !== 'dumb';
}

const CODES = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, gray: 90, bold: 1 } as const;
export type Colour = keyof typeof CODES;

export function paint(style: Style, colour: Colour, text: string): string {
  return style.color ? `\u001b[${CODES[colour]}m${text}\u001b[0m` : text;
}

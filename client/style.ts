/** Styling decided once per stream: colour and symbols only on a TTY, never with NO_COLOR or TERM=dumb. */
export interface Style {
  tty: boolean;
  color: boolean;
}

export function styleFor(stream: NodeJS.WriteStream): Style {
  const tty = stream.isTTY === true;
  const color = tty && !('NO_COLOR' in process.env && process.env.NO_COLOR !== '') && process.env.TERM !== 'dumb';
  return { tty, color };
}

const CODES = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, gray: 90, bold: 1 } as const;
export type Colour = keyof typeof CODES;

export function paint(style: Style, colour: Colour, text: string): string {
  return style.color ? `\u001b[${CODES[colour]}m${text}\u001b[0m` : text;
}

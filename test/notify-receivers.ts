/**
 * Real receivers for notification tests, on 127.0.0.1: an HTTP server that
 * records every request and checks webhook signatures as the docs tell a
 * receiver to (its own HMAC, not qwex's code), and an SMTP server
 * (smtp-server) that requires STARTTLS before AUTH and keeps each mail.
 */
import { execFileSync } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  json: any;  
  /** For requests that carried X-Qwex-Signature: whether it checks out against `secret` (undefined without one). */
  signature: 'valid' | 'invalid' | undefined;
}

/**
 * Checks `t=UNIX_SECONDS,v1=HEX` as documented: HEX is HMAC-SHA256 with the
 * secret over `UNIX_SECONDS + "." + body`, and t is within 5 minutes of now.
 */
export function checkSignature(header: string, body: string, secret: string): boolean {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
  if (!match) return false;
  const t = Number(match[1]);
  if (Math.abs(Date.now() / 1000 - t) > 300) return false;
  const expected = createHmac('sha256', secret).update(`${match[1]}.${body}`).digest();
  return timingSafeEqual(expected, Buffer.from(match[2]!, 'hex'));
}

export class HookReceiver {
  readonly requests: Received[] = [];
  /** The status each path answers with (200 by default); `hang` never answers. */
  readonly answers = new Map<string, number | 'hang'>();
  port = 0;
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(private readonly secret?: string) {}

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** Listens (on the same port as before, after a stop). */
  async start(): Promise<this> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const header = req.headers['x-qwex-signature'];
        let json: unknown;
        try {
          json = JSON.parse(body);
        } catch {
          json = undefined;
        }
        const path = req.url ?? '/';
        this.requests.push({
          path,
          headers: req.headers,
          body,
          json,
          signature: typeof header === 'string' && this.secret !== undefined ? (checkSignature(header, body, this.secret) ? 'valid' : 'invalid') : undefined,
        });
        const answer = this.answers.get(path) ?? 200;
        if (answer === 'hang') return;
        res.statusCode = answer;
        res.end(answer < 300 ? 'ok' : 'refused');
      });
    });
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }

  /** Stops listening: connections are refused until the next start. */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  on(path: string): Received[] {
    return this.requests.filter((r) => r.path === path);
  }
}

/** A port that nothing listens on (yet): bound, read, released. */
export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

export interface Mail {
  from: string;
  to: string[];
  raw: string;
  /** The header's value (first occurrence), unfolded. */
  header(name: string): string | undefined;
  /** Whether the session had been upgraded with STARTTLS when the mail was sent. */
  secure: boolean;
  user: string | undefined;
}

/**
 * An SMTP server with a self-signed certificate for 127.0.0.1: STARTTLS is
 * offered and AUTH is refused before it (smtp-server's default); one user
 * with one password.
 */
export class MailReceiver {
  readonly mails: Mail[] = [];
  readonly caFile: string;
  port = 0;
  private readonly dir: string;
  private server: SMTPServer | undefined;

  constructor(
    private readonly user: string,
    private readonly password: string,
  ) {
    this.dir = mkdtempSync(join(tmpdir(), 'qwex-smtp-'));
    this.caFile = join(this.dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(this.dir, 'key.pem'), '-out', this.caFile, '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  }

  async start(): Promise<this> {
    this.server = new SMTPServer({
      key: readFileSync(join(this.dir, 'key.pem')),
      cert: readFileSync(this.caFile),
      authMethods: ['PLAIN', 'LOGIN'],
      logger: false,
      onAuth: (auth, _session, callback) => {
        if (auth.username === this.user && auth.password === this.password) return callback(null, { user: auth.username });
        return callback(new Error('Invalid username or password'));
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          const head = raw.split(/\r?\n\r?\n/)[0]!.replace(/\r?\n[ \t]+/g, ' ');
          this.mails.push({
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((r) => r.address),
            raw,
            header: (name) => new RegExp(`^${name}:\\s*(.*)$`, 'im').exec(head)?.[1]?.trim(),
            secure: session.secure,
            user: session.user as string | undefined,
          });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', () => resolve()));
    this.port = (this.server.server.address() as AddressInfo).port;
    return this;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

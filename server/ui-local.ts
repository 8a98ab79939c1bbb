/**
 * `qwex ui`'s server: the dashboard's pages and the run API over this
 * user's local runs, on 127.0.0.1 only (started by server/ui.ts).
 *
 * Who may use it: whoever holds the one-time token in the URL printed as
 * the first line on stdout. The token is made here (never on a command
 * line, where other users could read it) and works once: it is exchanged
 * for a session cookie (HttpOnly, SameSite=Strict) and is then spent.
 * Requests naming another Host are refused (DNS rebinding).
 */
import { localWorkflows } from './ui-workflows.js';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { userInfo } from 'node:os';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import cookie from '@fastify/cookie';
import { API_PREFIX } from '../src/cloud/api.js';
import { ErrorCode, QwexError } from '../src/errors.js';
import { openRunService } from '../src/service/index.js';
import { RunStore } from '../src/store/run-store.js';
import { requireToken } from './auth.js';
import { ChangeFeed } from './change-feed.js';
import { installErrorHandling } from './http-errors.js';
import { LogWatchers } from './log-tail.js';
import { meRoutes } from './routes/me.js';
import { runApiRoutes } from './routes/run-api.js';
import { LocalRunsSource } from './runs-source-local.js';
import type { WorkflowLookup } from './runs-source-sql.js';
import { SHARED_SCHEMAS } from './schemas.js';
import { SseStreams } from './sse.js';
import type { Principal } from './tokens.js';
import { pageHeaders, pageRoutes } from './ui-pages.js';

/** How long the browser keeps the session (it also ends when this server stops). */
const SESSION_MAX_AGE_S = 7 * 24 * 3600;

export interface LocalUi {
  /** The URL with the one-time token. */
  url: string;
  close(): Promise<void>;
}

/** One-time tokens and the sessions they were exchanged for. */
class Sessions {
  private token: Buffer | undefined = randomBytes(32);
  private readonly ids = new Set<string>();

  get link(): string {
    return this.token ? this.token.toString('base64url') : '';
  }

  /** A session id for the one-time token, once; undefined for a spent or wrong one. */
  exchange(offered: string): string | undefined {
    const given = Buffer.from(offered, 'base64url');
    if (!this.token || given.length !== this.token.length || !timingSafeEqual(given, this.token)) return undefined;
    this.token = undefined;
    const id = randomBytes(32).toString('base64url');
    this.ids.add(id);
    return id;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }
}

export interface LocalUiOptions {
  /** 0: any free port. */
  port: number;
  /** Where workflows come from (default: this user's workflow records, server/ui-workflows.ts). */
  workflows?: WorkflowLookup;
  /** A look for run changes that failed (tried again at the next). */
  onError?: (error: Error) => void;
}

export async function startLocalUi(options: LocalUiOptions): Promise<LocalUi> {
  const store = new RunStore();
  const user = userInfo().username;
  const principal: Principal = { user, admin: true, tokenId: 'qwex-ui' };
  const source = new LocalRunsSource({
    store,
    user,
    openService: () => openRunService(store),
    workflows: options.workflows ?? localWorkflows(store),
    ...(options.onError ? { onError: options.onError } : {}),
  });
  const streams = new SseStreams();
  const watchers = new LogWatchers();
  const feed = new ChangeFeed(source);
  const sessions = new Sessions();
  let app: FastifyInstance | undefined;
  const close = async (): Promise<void> => {
    streams.closeAll();
    await app?.close();
    feed.close();
    watchers.close();
    await source.close();
    store.close();
  };
  try {
    await source.start();
    app = Fastify({ logger: { level: 'error', redact: ['req.headers.cookie'] } });
    const server = app;
    installErrorHandling(server);
    for (const schema of SHARED_SCHEMAS) server.addSchema(schema);
    await server.register(cookie);
    // Known once listening: the Host check and the cookie's name need the port.
    let port = 0;
    const cookieName = (): string => `qwex_ui_${port}`;

    server.addHook('onRequest', async (request, reply) => {
      const host = request.headers.host ?? '';
      if (host !== `127.0.0.1:${port}` && host !== `localhost:${port}`) {
        return reply.status(403).type('text/plain; charset=utf-8').send(`qwex ui answers only at http://127.0.0.1:${port}/ (this request was for host "${host.slice(0, 100)}")\n`);
      }
      return undefined;
    });
    // The printed link: its token becomes a session cookie, and the address bar loses the token at once.
    server.addHook('onRequest', async (request, reply) => {
      const url = new URL(request.url, 'http://x');
      if (request.method !== 'GET' || url.pathname !== '/' || !url.searchParams.has('token')) return undefined;
      if (sessions.has(request.cookies[cookieName()] ?? '')) return reply.redirect('/', 303);
      const session = sessions.exchange(url.searchParams.get('token') ?? '');
      if (!session) return refusedLink(reply);
      void reply.setCookie(cookieName(), session, { httpOnly: true, sameSite: 'strict', path: '/', maxAge: SESSION_MAX_AGE_S });
      return reply.redirect('/', 303);
    });
    await server.register(pageRoutes, { mode: 'workstation' });
    await server.register(async (secured) => {
      requireToken(secured, {
        lookup: async (id) => (sessions.has(id) ? principal : undefined),
        bearer: false,
        get cookie() {
          return cookieName();
        },
        missing: { message: 'not logged in: open the link `qwex ui` printed', hint: 'the link works once; start `qwex ui` again for a new one' },
      });
      await secured.register(meRoutes, {});
      await secured.register(runApiRoutes, { services: { source, streams, watchers, feed } });
    }, { prefix: API_PREFIX });

    await server.listen({ host: '127.0.0.1', port: options.port });
    const address = server.server.address();
    port = typeof address === 'object' && address ? address.port : options.port;
    return { url: `http://127.0.0.1:${port}/?token=${sessions.link}`, close };
  } catch (error) {
    await close();
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new QwexError(ErrorCode.Usage, `port ${options.port} on 127.0.0.1 is in use`, { hint: 'choose another with --port, or --port 0 for any free one' });
    }
    throw error;
  }
}

function refusedLink(reply: FastifyReply): FastifyReply {
  return pageHeaders(reply)
    .status(401)
    .type('text/html; charset=utf-8')
    .send(
      '<!doctype html><html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>qwex: link refused</title>' +
        '<main style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1rem; line-height: 1.5">' +
        '<h1>This link does not log in</h1><p>Its token was already used, or it is not the one <code>qwex ui</code> printed. ' +
        'Each link works once. Stop <code>qwex ui</code> and start it again for a new one.</p></main></html>\n',
    );
}

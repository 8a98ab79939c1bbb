import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';
import { installPath } from '../src/install-paths.js';

/** Where `npm run build` puts the dashboard's front end (web/ bundled by esbuild). */
export function webRoot(): string {
  return installPath('dist', 'web');
}

/** Paths the front end routes itself (index.html answers them all). */
const PAGE_PATHS = ['/runs/:id', '/workflows/:id'];

/**
 * No script, style, frame or connection from anywhere but this server; the
 * pages may not be framed (clickjacking of the cancel button). Styles may be
 * inline: the terminal and the plots set element styles from script.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "font-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'self'",
].join('; ');

export interface PagesOptions {
  /** `cloud` (a login form takes a token) or `workstation` (`qwex ui`: the printed link logs in). */
  mode: 'team' | 'workstation';
  /** Answered at `/` to a client that does not ask for HTML (qwexcloud's API description). */
  rootJson?: () => unknown;
}

/** Headers of every page: what the page may load, and that it is never framed, sniffed or given a Referer. */
export function pageHeaders(reply: FastifyReply): FastifyReply {
  return reply
    .header('content-security-policy', CONTENT_SECURITY_POLICY)
    .header('x-frame-options', 'DENY')
    .header('x-content-type-options', 'nosniff')
    .header('referrer-policy', 'no-referrer');
}

/**
 * The dashboard's pages: one HTML document for every page path (the front
 * end routes itself), and its assets under /assets/, revalidated on each
 * load (their names do not change between builds). The pages hold no data:
 * everything they show comes from the /v1 API, with the cookie.
 */
export const pageRoutes: FastifyPluginAsync<PagesOptions> = async (app, options) => {
  const root = webRoot();
  const indexFile = join(root, 'index.html');
  const built = existsSync(indexFile);
  const index = built ? readFileSync(indexFile, 'utf8').replace('__QWEX_MODE__', options.mode) : '';

  if (built) {
    await app.register(fastifyStatic, {
      root: join(root, 'assets'),
      prefix: '/assets/',
      index: false,
      cacheControl: false,
      setHeaders: (reply) => {
        void reply.header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff');
      },
    });
  }

  const sendIndex = (reply: FastifyReply): FastifyReply => {
    if (!built) {
      return reply.status(503).type('text/plain; charset=utf-8').send('The dashboard\'s pages were not built: run `npm run build` in the qwex installation.\n');
    }
    return pageHeaders(reply).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(index);
  };

  app.get('/', { schema: { hide: true } }, async (request, reply) => {
    const wantsHtml = /text\/html/.test(request.headers.accept ?? '');
    if (!wantsHtml && options.rootJson) return reply.send(options.rootJson());
    return sendIndex(reply);
  });
  for (const path of PAGE_PATHS) app.get(path, { schema: { hide: true } }, async (_request, reply) => sendIndex(reply));
};

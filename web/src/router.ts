import { useEffect, useState } from 'preact/hooks';

export type Route = { page: 'runs'; search: URLSearchParams } | { page: 'run'; id: string } | { page: 'workflow'; id: string } | { page: 'missing'; path: string };

const RUN_ID = /^\/runs\/([0-9a-f-]{36})\/?$/;
const WORKFLOW_ID = /^\/workflows\/([0-9A-Za-z][0-9A-Za-z._-]{0,63})\/?$/;
const NAVIGATED = 'qwex:navigate';

export function parseRoute(location: Location): Route {
  const path = location.pathname;
  if (path === '/' || path === '') return { page: 'runs', search: new URLSearchParams(location.search) };
  const run = RUN_ID.exec(path);
  if (run) return { page: 'run', id: run[1]! };
  const workflow = WORKFLOW_ID.exec(path);
  if (workflow) return { page: 'workflow', id: workflow[1]! };
  return { page: 'missing', path };
}

/** Goes to a page of the dashboard without reloading (`replace`: without a new history entry, as filters change). */
export function navigate(href: string, options: { replace?: boolean } = {}): void {
  if (options.replace) history.replaceState(null, '', href);
  else history.pushState(null, '', href);
  window.dispatchEvent(new Event(NAVIGATED));
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(window.location));
  useEffect(() => {
    const update = (): void => setRoute(parseRoute(window.location));
    window.addEventListener('popstate', update);
    window.addEventListener(NAVIGATED, update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener(NAVIGATED, update);
    };
  }, []);
  return route;
}

/** Same-origin links to pages go through `navigate`; downloads, API links and modified clicks (new tab) are the browser's. */
export function routeLinks(): void {
  document.addEventListener('click', (event) => {
    if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const link = (event.target as Element | null)?.closest?.('a');
    const target = link?.getAttribute('target');
    if (!link || link.hasAttribute('download') || (target && target !== '_self')) return;
    const href = link.getAttribute('href') ?? '';
    if (!href.startsWith('/') || href.startsWith('//') || href.startsWith('/v1/')) return;
    event.preventDefault();
    navigate(href);
  });
}

import '@xterm/xterm/css/xterm.css';
import 'uplot/dist/uPlot.min.css';
import './styles.css';
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, whenUnauthorized, type Me } from './api.js';
import { LoginPage } from './pages/login.js';
import { RunPage } from './pages/run.js';
import { RunsPage } from './pages/runs.js';
import { WorkflowPage } from './pages/workflow.js';
import { routeLinks, useRoute, type Route } from './router.js';

/** `cloud` (qwexcloud: a login form) or `workstation` (`qwex ui`), as the server that sent this page says. */
const MODE: 'team' | 'workstation' = document.querySelector('meta[name="qwex-mode"]')?.getAttribute('content') === 'workstation' ? 'workstation' : 'team';

type Session = { state: 'checking' } | { state: 'out' } | { state: 'in'; me: Me };

function App() {
  const [session, setSession] = useState<Session>({ state: 'checking' });
  const route = useRoute();

  useEffect(() => {
    whenUnauthorized(() => setSession({ state: 'out' }));
    api.me().then(
      (me) => setSession({ state: 'in', me }),
      () => setSession({ state: 'out' }),
    );
  }, []);

  // After moving to another page, the focus goes to its heading (or, while it loads, to the main region), as a page load would put it at the top.
  useEffect(() => {
    (document.querySelector<HTMLElement>('main h1') ?? document.querySelector<HTMLElement>('main'))?.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }, [route.page, 'id' in route ? route.id : '']);

  useEffect(() => {
    document.title = `${titleOf(route)} · qwex`;
  }, [route]);

  if (session.state === 'checking') return <p class="muted center">Loading…</p>;
  if (session.state === 'out') return <LoginPage mode={MODE} onLogin={(me) => setSession({ state: 'in', me })} />;

  const logout = async (): Promise<void> => {
    await api.logout().catch(() => undefined);
    setSession({ state: 'out' });
  };

  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <a href="/" class="brand">qwex</a>
        <span class="where">{MODE === 'workstation' ? 'this machine' : 'qwexcloud'}</span>
        <span class="who">
          {session.me.user}
          {session.me.admin && MODE === 'team' ? ' (admin)' : ''}
        </span>
        {MODE === 'team' && (
          <button type="button" class="link" onClick={() => void logout()}>
            Log out
          </button>
        )}
      </header>
      <main id="main" tabIndex={-1}>
        {route.page === 'runs' && <RunsPage mode={MODE} search={route.search} />}
        {route.page === 'run' && <RunPage id={route.id} mode={MODE} />}
        {route.page === 'workflow' && <WorkflowPage id={route.id} />}
        {route.page === 'missing' && (
          <>
            <h1 tabIndex={-1}>No such page</h1>
            <p>
              Nothing is at <span class="mono">{route.path}</span>. <a href="/">All runs</a>
            </p>
          </>
        )}
      </main>
    </>
  );
}

function titleOf(route: Route): string {
  switch (route.page) {
    case 'runs':
      return 'Runs';
    case 'run':
      return `Run ${route.id.slice(0, 13)}`;
    case 'workflow':
      return `Workflow ${route.id.slice(0, 13)}`;
    default:
      return 'Not found';
  }
}

routeLinks();
render(<App />, document.getElementById('app')!);

import { useState } from 'preact/hooks';
import { api, type Me } from '../api.js';

/**
 * qwexcloud's login: a token, sent once; the server keeps it in an HttpOnly
 * cookie that this page's scripts never see again. Under `qwex ui` there is
 * nothing to type: the link it printed logs in.
 */
export function LoginPage({ mode, onLogin }: { mode: 'team' | 'workstation'; onLogin: (me: Me) => void }) {
  const [token, setToken] = useState('');
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);

  if (mode === 'workstation') {
    return (
      <main id="main" class="login">
        <h1 tabIndex={-1}>Not logged in</h1>
        <p>
          Open the link <code>qwex ui</code> printed. Each link works once: if this browser lost its session, stop <code>qwex ui</code> and start it
          again for a new one.
        </p>
      </main>
    );
  }

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const me = await api.login(token);
      setToken('');
      onLogin(me);
    } catch (e) {
      setError((e as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main id="main" class="login">
      <h1 tabIndex={-1}>Log in to qwexcloud</h1>
      <form onSubmit={(e) => void submit(e)} aria-describedby="login-help">
        <label for="token">Token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          required
          value={token}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? 'login-error' : undefined}
          onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
        />
        <button type="submit" disabled={busy || token.trim() === ''}>
          Log in
        </button>
        {error && (
          <p id="login-error" role="alert" class="error">
            {error}
          </p>
        )}
      </form>
      <p id="login-help" class="muted">
        A token is made by an admin with <code>qwexcloud token create --user NAME</code>. It is kept in a cookie this page cannot read, until you log out.
      </p>
    </main>
  );
}

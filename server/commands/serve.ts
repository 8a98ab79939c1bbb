import { loadServerConfig, type ConfigFlags } from '../config.js';
import { startServer } from '../main.js';

/** `qwexcloud serve`: runs until SIGTERM or SIGINT; runs go on after it stops and are re-adopted by the next start. */
export async function serve(flags: ConfigFlags): Promise<number> {
  const config = loadServerConfig(flags);
  const server = await startServer(config);
  await new Promise<void>((resolve) => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => {
        server.app.log.info({ event: 'stopping', signal }, 'stopping');
        resolve();
      });
    }
  });
  await server.close();
  // Runs go on without us; a handle left open by a library must not keep a stopped server's process alive.
  setTimeout(() => process.exit(0), 5000).unref();
  return 0;
}

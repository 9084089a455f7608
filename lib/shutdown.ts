import type { Logger } from './log.ts';

/**
 * Runs `close` once on SIGTERM/SIGINT, then exits. A second signal, or `graceMs` passing,
 * forces the exit so a stuck drain never keeps a pod in Terminating forever.
 */
export function onShutdown(log: Logger, close: () => Promise<void>, graceMs = 25_000): void {
  let closing = false;
  const handler = (signal: NodeJS.Signals) => {
    if (closing) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    closing = true;
    log.info({ signal, graceMs }, 'shutting down');
    const timer = setTimeout(() => {
      log.error({ graceMs }, 'graceful shutdown timed out');
      process.exit(1);
    }, graceMs);
    timer.unref();
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}

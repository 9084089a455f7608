import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout stays free for command output such as
 * `edgemesh init --dry-run` or `edgemesh inject`). Level from EDGEMESH_LOG_LEVEL.
 */
export function createLogger(component: string, level = process.env.EDGEMESH_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { component }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination(2));
}

/** A logger that drops everything: for tests and pure code paths that take an optional logger. */
export const silentLogger: Logger = pino({ level: 'silent' });

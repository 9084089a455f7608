import { writeSync } from 'node:fs';

/**
 * Structured JSON logs on stderr (stdout stays free for command output such as
 * `edgemesh init --dry-run` or `edgemesh inject`). Level from EDGEMESH_LOG_LEVEL.
 *
 * One line per record in pino's format (`{"level":30,"time":"<ISO>","component":…,"msg":…}`,
 * so pino-pretty and log pipelines read it), written synchronously like pino.destination(2).
 * Not pino itself: it always loads thread-stream and worker_threads for its transports,
 * ~1.5 MB private in every sidecar (bench/memory.ts).
 */
export interface Logger {
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** An Error (anywhere in a record) as pino's serializer shows it; everything else as JSON does. */
function replacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { type: value.name, message: value.message, stack: value.stack };
  return value;
}

function mergeMsg({ msg: field, ...rest }: { msg?: unknown }, msg: string | undefined) {
  const text = typeof field === 'string' ? field : JSON.stringify(field, replacer);
  return { obj: rest, msg: msg === undefined ? text : `${msg}: ${text}` };
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

function writeLine(line: string): void {
  const buf = Buffer.from(line);
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(2, buf, off);
    } catch (err) {
      // A non-blocking stderr pipe that is full: wait for the reader, as sonic-boom does.
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') return;
      Atomics.wait(sleeper, 0, 0, 10);
    }
  }
}

function makeLogger(threshold: number, bindings: string): Logger {
  const at = (level: number) => {
    if (level < threshold) return () => {};
    return (obj: object | string, msg?: string) => {
      let line = `{"level":${level},"time":"${new Date().toISOString()}"${bindings}`;
      if (typeof obj === 'string') msg = obj;
      else {
        // A `msg` field would be a second "msg" key; pipelines keep only the last, so the
        // field's text would be lost: it is made part of the one message instead.
        if (Object.hasOwn(obj, 'msg')) ({ obj, msg } = mergeMsg(obj as { msg?: unknown }, msg));
        const fields = JSON.stringify(obj, replacer);
        if (fields && fields.length > 2) line += `,${fields.slice(1, -1)}`;
      }
      if (msg !== undefined) line += `,"msg":${JSON.stringify(msg)}`;
      writeLine(`${line}}\n`);
    };
  };
  return {
    debug: at(LEVELS.debug),
    info: at(LEVELS.info),
    warn: at(LEVELS.warn),
    error: at(LEVELS.error),
    child: (more) => {
      const fields = JSON.stringify(more, replacer);
      return makeLogger(threshold, fields.length > 2 ? `${bindings},${fields.slice(1, -1)}` : bindings);
    },
  };
}

export function createLogger(component: string, level = process.env.EDGEMESH_LOG_LEVEL ?? 'info'): Logger {
  const threshold = level === 'silent' ? Number.POSITIVE_INFINITY : LEVELS[level];
  if (threshold === undefined) throw new Error(`unknown log level ${JSON.stringify(level)}`);
  return makeLogger(threshold, `,"component":${JSON.stringify(component)}`);
}

/** A logger that drops everything: for tests and pure code paths that take an optional logger. */
export const silentLogger: Logger = makeLogger(Number.POSITIVE_INFINITY, '');

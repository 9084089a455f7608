import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

// The logger writes to fd 2 itself, so it is checked in a child process, line by line.
function logLines(code: string, level = 'debug'): Record<string, unknown>[] {
  return rawLines(code, level).map((l) => JSON.parse(l));
}

function rawLines(code: string, level = 'debug'): string[] {
  const logModule = new URL('./log.ts', import.meta.url).href;
  const r = spawnSync(
    process.execPath,
    ['--input-type=module', '-e', `import { createLogger } from '${logModule}';\n${code}`],
    { encoding: 'utf8', env: { ...process.env, EDGEMESH_LOG_LEVEL: level } },
  );
  expect(r.status, r.stderr).toBe(0);
  return r.stderr.split('\n').filter(Boolean);
}

describe('createLogger', () => {
  it("writes pino's line format: level, ISO time, component, child bindings, fields, msg", () => {
    const [plain, child, err, noMsg] = logLines(`
      const log = createLogger('sidecar');
      log.info('started');
      log.child({ part: 'dns' }).child({ n: 1 }).warn({ port: 15053 }, 'listening');
      log.error({ err: new Error('boom') }, 'failed');
      log.debug({ a: 'x"y' });
    `);
    expect(plain).toEqual({ level: 30, time: expect.any(String), component: 'sidecar', msg: 'started' });
    expect(new Date(plain.time as string).toISOString()).toBe(plain.time);
    expect(Object.keys(child)).toEqual(['level', 'time', 'component', 'part', 'n', 'port', 'msg']);
    expect(child).toMatchObject({ level: 40, part: 'dns', n: 1, port: 15053, msg: 'listening' });
    expect(err).toMatchObject({ level: 50, err: { type: 'Error', message: 'boom' }, msg: 'failed' });
    expect((err.err as { stack: string }).stack).toMatch(/^Error: boom\n/);
    expect(noMsg).toEqual({ level: 20, time: expect.any(String), component: 'sidecar', a: 'x"y' });
  });

  it('drops records below EDGEMESH_LOG_LEVEL and rejects an unknown level', () => {
    const lines = logLines(
      `const log = createLogger('x'); log.debug('no'); log.info('yes'); log.warn('yes');`,
      'info',
    );
    expect(lines.map((l) => l.msg)).toEqual(['yes', 'yes']);
    expect(logLines(`createLogger('x').error('no')`, 'silent')).toEqual([]);
    expect(() => logLines(`createLogger('x')`, 'loud')).toThrow();
  });

  it('a msg field is kept in the one msg key, not lost to a second one', () => {
    const lines = rawLines(`
      const log = createLogger('gateway');
      log.warn({ server: 'cloud1', msg: 'node b1 is not registered at cloud1' }, 'tunnel-server error');
      log.info({ msg: 'alone' });
      log.info({ msg: { code: 3 } }, 'object');
    `);
    for (const line of lines) expect(line.match(/"msg":/g)).toHaveLength(1);
    expect(lines.map((l) => JSON.parse(l).msg)).toEqual([
      'tunnel-server error: node b1 is not registered at cloud1',
      'alone',
      'object: {"code":3}',
    ]);
    expect(JSON.parse(lines[0])).toMatchObject({ server: 'cloud1', level: 40 });
  });
});

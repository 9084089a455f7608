import { fstatSync, openSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { loadAddon, NativeL4 } from './native-l4.ts';

// The engine's data path runs in network namespaces (sidecar/native-l4.netns.test.ts); here
// only what needs no socket: the addon is built, and bad arguments are refused, not crashed on.
describe('native L4 addon', () => {
  it('is built (npm ci runs sidecar/native/build.sh; without it the sidecar falls back to Node sockets)', () => {
    const addon = loadAddon();
    expect(addon instanceof Error ? addon.message : 'loaded').toBe('loaded');
  });

  const engine = new NativeL4({
    idleTimeoutMs: 0,
    onAccepted: () => undefined,
    onAcceptError: () => undefined,
  });
  afterAll(() => engine.stop());

  it.each([
    ['not-an-ip', 80, 'not an IPv4 or IPv6 address'],
    ['10.0.0.1 ', 80, 'not an IPv4 or IPv6 address'],
    ['10.0.0.1', 0, 'port must be an integer in [1, 65535]'],
    ['10.0.0.1', 65536, 'port must be an integer in [1, 65535]'],
    ['::1', 1.5, 'port must be an integer in [1, 65535]'],
  ])('refuses to dial %j port %j', async (ip, port, message) => {
    await expect(engine.connect(1000, ip, port, 1000, () => undefined)).rejects.toThrow(message);
  });

  it('refuses a bad fd or timeout', async () => {
    await expect(engine.connect(-1, '10.0.0.1', 80, 1000, () => undefined)).rejects.toThrow(
      'fd must be an integer',
    );
    await expect(engine.connect(1000, '10.0.0.1', 80, 0, () => undefined)).rejects.toThrow(
      'timeoutMs must be an integer',
    );
  });

  it('refuses a bad listen address before binding anything', () => {
    expect(() => engine.listen('0.0.0.0', 0, 128)).toThrow('port must be an integer');
    expect(() => engine.listen('localhost', 15001, 128)).toThrow('not an IPv4 or IPv6 address');
  });

  it('refuses calls after stop with a clear error', async () => {
    const stopped = new NativeL4({
      idleTimeoutMs: 0,
      onAccepted: () => undefined,
      onAcceptError: () => undefined,
    });
    stopped.stop();
    await expect(stopped.connect(1000, '10.0.0.1', 80, 1000, () => undefined)).rejects.toThrow(
      'the L4 engine is stopped',
    );
    expect(() => stopped.closeAll()).not.toThrow();
    expect(() => stopped.stop()).not.toThrow();
  });

  it('still closes an fd JavaScript holds after stop (accepts queued before the stop reach JS later)', () => {
    const stopped = new NativeL4({
      idleTimeoutMs: 0,
      onAccepted: () => undefined,
      onAcceptError: () => undefined,
    });
    stopped.stop();
    const fd = openSync('/dev/null', 'r');
    stopped.reset(fd);
    expect(() => fstatSync(fd)).toThrow(/EBADF/);
  });
});

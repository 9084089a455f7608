import { describe, expect, it } from 'vitest';
import { defaultMetricsHosts } from './metrics.ts';

describe('defaultMetricsHosts (issue 16 item 10: metrics never on all interfaces)', () => {
  it('takes the first specific address and loopback', () => {
    expect(defaultMetricsHosts(['192.168.50.1', '10.0.0.9'])).toEqual(['192.168.50.1', '127.0.0.1']);
    expect(defaultMetricsHosts(['0.0.0.0', '10.0.0.9'])).toEqual(['10.0.0.9', '127.0.0.1']);
    expect(defaultMetricsHosts(['::', undefined, 'fd00::5'])).toEqual(['fd00::5', '127.0.0.1']);
  });

  it('falls back to loopback alone, never 0.0.0.0', () => {
    expect(defaultMetricsHosts(['0.0.0.0', undefined, ''])).toEqual(['127.0.0.1']);
    expect(defaultMetricsHosts(['127.0.0.1'])).toEqual(['127.0.0.1']);
  });
});

import { describe, expect, it } from 'vitest';
import { parseGoDuration } from './duration.ts';

describe('parseGoDuration', () => {
  // Expected values as Go's time.ParseDuration gives them, in milliseconds.
  it.each([
    ['0', 0],
    ['1s', 1_000],
    ['120s', 120_000],
    ['1m30s', 90_000],
    ['1.5h', 5_400_000],
    ['500ms', 500],
    ['2m0.5s', 120_500],
    ['.5s', 500],
    ['1.s', 1_000],
    ['1h0m0s', 3_600_000],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['1500μs', 1.5],
    ['2000000ns', 2],
    ['+3s', 3_000],
    ['-3s', -3_000],
  ])('%s → %d ms', (text, ms) => {
    expect(parseGoDuration(text)).toBeCloseTo(ms, 9);
  });

  it.each([
    '',
    '30', // a unit is required: seconds or milliseconds would be a guess
    's',
    '.s',
    '1 s',
    ' 1s',
    '1s ',
    '1d', // Go has no days
    '1S',
    '1sec',
    '-',
    '+',
    '--1s',
    '1e3s',
    '0x10s',
    '1..5s',
    `${'1'.repeat(70)}s`, // over the length bound
  ])('refuses %j', (text) => {
    expect(parseGoDuration(text)).toBeUndefined();
  });

  it('refuses what is not a string', () => {
    expect(parseGoDuration(120 as unknown as string)).toBeUndefined();
  });
});

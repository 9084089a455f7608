import { describe, expect, it } from 'vitest';
import { whatIsServed } from './watcher.ts';

describe('watcher logs: what is served while the API cannot be adopted', () => {
  it('a gateway that never had a catalog does not claim a last one', () => {
    expect(whatIsServed(undefined, false)).toBe(
      'no catalog yet (none persisted, none listed from the API): nothing to serve',
    );
    expect(whatIsServed(undefined, false)).not.toContain('last catalog');
  });

  it('names the catalog it serves: persisted before the API synced, else the last one', () => {
    expect(whatIsServed(7, false)).toBe('serving the persisted catalog (revision 7)');
    expect(whatIsServed(42, true)).toBe('serving the last catalog (revision 42)');
  });
});

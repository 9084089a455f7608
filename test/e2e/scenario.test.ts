import { describe, expect, it } from 'vitest';
import { pathsUsed, servedBy, streamsByPath } from './scenario.ts';

// The e2e test reads what happened from text: the gateway's metrics and the test server's
// page. These parsers must not find a path or a pod that is not there.
describe('e2e scenario parsers', () => {
  const metrics = [
    '# HELP edgemesh_gateway_streams_total CONNECT streams opened, by path',
    '# TYPE edgemesh_gateway_streams_total counter',
    'edgemesh_gateway_streams_total{path="local",component="gateway"} 2',
    'edgemesh_gateway_streams_total{component="gateway",path="relay"} 5',
    'edgemesh_gateway_streams_total_created{path="relay"} 1700000000',
    'edgemesh_gateway_errors_total{code="EDGEMESH_ERR_UNAVAILABLE"} 1',
  ].join('\n');

  it('reads stream counters by path, in any label order, ignoring other series', () => {
    expect(streamsByPath(metrics)).toEqual({ local: 2, relay: 5 });
    expect(streamsByPath('')).toEqual({});
  });

  it('reports only the paths whose counters grew', () => {
    expect(pathsUsed({ local: 2, relay: 5 }, { local: 2, relay: 6, punched: 1 })).toEqual([
      'relay',
      'punched',
    ]);
    expect(pathsUsed({ relay: 5 }, { relay: 5 })).toEqual([]);
  });

  it('finds the pod and node in the test server page, and nothing in an error page', () => {
    const page =
      '<!doctype html><title>demo/nginx-1</title><p>served by pod demo/nginx-7c9-abcde on node node2-1 port 80 to 10.1.1.2</p>';
    expect(servedBy(page)).toEqual({ pod: 'nginx-7c9-abcde', node: 'node2-1' });
    expect(
      servedBy('edgemesh: upstream of demo/nginx-svc:12345 failed: EDGEMESH_ERR_UNAVAILABLE'),
    ).toBeUndefined();
  });
});

import { describe, expect, it } from 'vitest';
import { apiSettings } from './cli.ts';

const base = { 'api-insecure-skip-tls-verify': false, edge: 'auto', 'endpoints-source': 'auto' };

describe('gateway API flags', () => {
  it('auto: edge mode and core/v1 Endpoints with --api-server, EndpointSlices otherwise', () => {
    expect(apiSettings({ ...base, 'api-server': 'http://127.0.0.1:10550' })).toEqual({
      edge: true,
      endpointsSource: 'endpoints',
    });
    expect(apiSettings({ ...base })).toEqual({ edge: false, endpointsSource: 'endpointslices' });
    expect(apiSettings({ ...base, kubeconfig: '/k' })).toEqual({
      edge: false,
      endpointsSource: 'endpointslices',
    });
  });

  it('explicit choices win', () => {
    expect(
      apiSettings({
        ...base,
        'api-server': 'https://10.0.0.1:6443',
        edge: 'false',
        'endpoints-source': 'endpoints',
      }),
    ).toEqual({ edge: false, endpointsSource: 'endpoints' });
    expect(apiSettings({ ...base, edge: 'true', 'endpoints-source': 'endpointslices' })).toEqual({
      edge: true,
      endpointsSource: 'endpointslices',
    });
  });

  it('errors name the flag', () => {
    expect(() => apiSettings({ ...base, kubeconfig: '/k', 'api-server': 'http://a:1' })).toThrow(
      /--kubeconfig and --api-server/,
    );
    expect(() => apiSettings({ ...base, 'api-server': 'http://a:1', 'api-token-file': '/t' })).toThrow(
      /--api-token-file needs an https/,
    );
    expect(() => apiSettings({ ...base, 'api-ca-file': '/ca' })).toThrow(/--api-ca-file needs an https/);
    expect(() =>
      apiSettings({
        ...base,
        'api-server': 'https://a:1',
        'api-insecure-skip-tls-verify': true,
        'api-ca-file': '/ca',
      }),
    ).toThrow(/exclude each other/);
  });
});

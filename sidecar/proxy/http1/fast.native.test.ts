// fast.test.ts's whole suite on the native engine's HTTP/1.1 path (EDGEMESH_HTTP1_PATH=native,
// read when the HttpProxy is built in its beforeAll): the same bytes on the wire either way.
process.env.EDGEMESH_HTTP1_PATH = 'native';
await import('./fast.test.ts');

// pool.test.ts's suite on the native engine's HTTP/1.1 path (EDGEMESH_HTTP1_PATH=native): its
// gateway-hop cases stay in JavaScript (the engine does not take them), the rest run in C.
process.env.EDGEMESH_HTTP1_PATH = 'native';
await import('./pool.test.ts');

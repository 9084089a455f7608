/**
 * The lab's gRPC service, defined without a .proto: grpc-js's generic service definition with
 * raw Buffer messages (the bytes on the wire are the message). Shared by the backend
 * (grpc-backend.ts) and the test client (grpc-client.ts).
 *
 *   Echo   unary          → "<backend ip>\n" + the request's bytes (1 MiB messages too)
 *   Fail   unary          → NOT_FOUND, message "no such thing: <request>", trailer x-why: lab
 *   Sleep  unary          request "<ms>": answers "slept" after that long (deadline tests)
 *   Count  server stream  request "<n>": n messages "<ip> <i>", trailer x-count: n
 *   Chat   bidi stream    each message back as "<ip>: <message>", trailer x-seen: <count>
 */
import type { ServiceDefinition } from '@grpc/grpc-js';

const raw = {
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
};

const method = (name: string, requestStream: boolean, responseStream: boolean) => ({
  path: `/edgemesh.lab.Lab/${name}`,
  requestStream,
  responseStream,
  originalName: name,
  ...raw,
});

export const labService = {
  Echo: method('Echo', false, false),
  Fail: method('Fail', false, false),
  Sleep: method('Sleep', false, false),
  Count: method('Count', false, true),
  Chat: method('Chat', true, true),
} satisfies ServiceDefinition;

/** The most a lab message may be (both sides): above the 1 MiB test message, below grpc-js's 4 MiB default. */
export const MAX_MESSAGE = 2 * 1024 * 1024;

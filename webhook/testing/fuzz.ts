/**
 * Fuzz target for the webhook's AdmissionReview handling (admission.ts `review`, which
 * server.ts calls with the parsed body; test/harness/fuzz.ts runs it). The corpus is the
 * golden tests' real AdmissionReviews, mutated in structure.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { EdgemeshError, ErrorCodes } from '../../lib/errors.ts';
import { check, type FuzzTarget, mutateBytes, mutateJson } from '../../test/harness/fuzz.ts';
import { type AdmissionReviewResponse, review } from '../admission.ts';
import { resolveConfig } from '../config.ts';
import type { PatchOp } from '../inject.ts';
import { applyPatch } from '../manual.ts';

const DIR = join(import.meta.dirname, '..', 'testdata', 'admission');
const REVIEWS: readonly unknown[] = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(DIR, f), 'utf8')));
const CONFIG = resolveConfig({ image: 'registry.example/edgemesh:fuzz' });

export interface AdmissionInput {
  /** The request body as the API server would send it (server.ts parses it as JSON). */
  text: string;
}

/**
 * Properties: only EDGEMESH_ERR_BAD_REQUEST (server.ts answers it 400; anything else would
 * be a 500, which with failurePolicy Fail blocks the pod); an answer names the request's uid;
 * a patch applies to the pod it was made for; the patched pod, reviewed again, is not
 * injected twice.
 */
export const admissionTarget: FuzzTarget<AdmissionInput> = {
  name: 'AdmissionReview (webhook/admission.ts)',
  input(rng) {
    const text = mutateJson(rng, rng.pick(REVIEWS));
    return { text: rng.chance(0.05) ? mutateBytes(rng, [Buffer.from(text)]).toString('utf8') : text };
  },
  parse({ text }) {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return undefined; // fastify answers 400 before review runs
    }
    return review(body, CONFIG);
  },
  verify({ text }, { value }) {
    if (!value) return;
    const { response } = value as { response: AdmissionReviewResponse };
    const body = JSON.parse(text);
    check(response.response.uid === body.request.uid, () => 'answer for another uid');
    if (!response.response.patch) return;
    const patch = JSON.parse(Buffer.from(response.response.patch, 'base64').toString()) as PatchOp[];
    let injected: unknown;
    try {
      injected = applyPatch(structuredClone(body.request.object), patch);
    } catch (err) {
      check(false, () => `the patch does not apply to its pod: ${(err as Error).message}`);
    }
    const again = review({ ...body, request: { ...body.request, object: injected } }, CONFIG);
    check(
      again.decision.outcome === 'skipped',
      () => `re-review of the injected pod: ${again.decision.outcome}`,
    );
  },
  expected: (err) => err instanceof EdgemeshError && err.code === ErrorCodes.BAD_REQUEST,
  show: (i) => i.text,
};

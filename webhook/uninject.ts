import type { V1Pod } from '@kubernetes/client-node';
import {
  CREATABLE,
  INIT_NAME,
  type InjectionRecord,
  PROXY_NAME,
  RESERVED_PORTS_SYSCTL_NAME,
  STATUS_ANNOTATION,
} from './inject.ts';

/**
 * `edgemesh uninject`: the inverse of injection, pure. It undoes what the status annotation
 * records (inject.ts InjectionRecord): the containers it names, the reserved-ports sysctl as it
 * was, then the objects injection created when nothing else was put in them since. So
 * uninject(inject(pod)) is the pod, whatever it had before. Nothing else is touched: volumes,
 * labels and annotations of the pod's own stay as they are.
 */
export type UninjectResult = { pod: V1Pod; outcome: 'removed' | 'not-injected'; notes: string[] };

/** Throws an Error naming what is malformed; the caller adds where. */
export function uninjectPod(input: V1Pod): UninjectResult {
  const raw = input.metadata?.annotations?.[STATUS_ANNOTATION];
  const hasOurs = (input.spec?.initContainers ?? []).some(
    (c) => c.name === INIT_NAME || c.name === PROXY_NAME,
  );
  if (raw === undefined && !hasOurs) return { pod: input, outcome: 'not-injected', notes: [] };
  const pod = structuredClone(input);
  const notes: string[] = [];
  // No annotation, yet our containers: injected by hand or by another tool; remove ours only.
  const record = raw === undefined ? undefined : parseRecord(raw);
  if (!record) notes.push(`no ${STATUS_ANNOTATION}: removed the edgemesh containers only`);
  // Only edgemesh's own names, whatever the record says: an edited annotation cannot make
  // uninject remove the pod's own containers.
  const edgemesh = (n: string) => n === INIT_NAME || n === PROXY_NAME;
  const names = new Set<string>((record?.containers ?? []).filter(edgemesh));
  if (pod.spec?.initContainers)
    pod.spec.initContainers = pod.spec.initContainers.filter((c) => !edgemesh(c.name));
  if (pod.spec?.containers) pod.spec.containers = pod.spec.containers.filter((c) => !names.has(c.name));

  const ports = record?.reservedPorts;
  const sysctls = pod.spec?.securityContext?.sysctls;
  const index = sysctls?.findIndex((s) => s.name === RESERVED_PORTS_SYSCTL_NAME) ?? -1;
  if (ports && sysctls && index !== -1) {
    if ('appended' in ports) sysctls.splice(index, 1);
    // A sysctl without a value is what the pod had (the API's type says it is required).
    else if (ports.before === null) delete (sysctls[index] as { value?: string }).value;
    else sysctls[index].value = ports.before;
  } else if (ports) {
    notes.push(`${RESERVED_PORTS_SYSCTL_NAME} is gone already: left as it is`);
  }

  if (pod.metadata?.annotations) delete pod.metadata.annotations[STATUS_ANNOTATION];
  // Deepest first, so that /metadata follows /metadata/annotations.
  for (const pointer of [...(record?.created ?? [])].sort((a, b) => b.length - a.length)) {
    const [parent, key] = locate(pod, pointer);
    const value = parent?.[key];
    if (value === undefined) continue;
    const empty = Array.isArray(value) ? value.length === 0 : Object.keys(value as object).length === 0;
    if (empty) delete parent?.[key];
    else notes.push(`${pointer} was created by injection but holds more now: kept`);
  }
  return { pod, outcome: 'removed', notes };
}

function locate(pod: V1Pod, pointer: string): [Record<string, unknown> | undefined, string] {
  const parts = pointer.split('/').slice(1);
  const key = parts.pop() as string;
  let holder: unknown = pod;
  for (const p of parts) holder = (holder as Record<string, unknown> | undefined)?.[p];
  return [
    typeof holder === 'object' && holder !== null ? (holder as Record<string, unknown>) : undefined,
    key,
  ];
}

/** The annotation's record, validated: it comes from a manifest anyone may have edited. */
export function parseRecord(raw: string): InjectionRecord {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new Error(`${STATUS_ANNOTATION} is not JSON: ${(err as Error).message}`);
  }
  const fail = (why: string) => new Error(`${STATUS_ANNOTATION}: ${why}`);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw fail('must be a JSON object');
  const r = value as Record<string, unknown>;
  const names = (key: string) => {
    const v = r[key] ?? [];
    if (!Array.isArray(v) || !v.every((n) => typeof n === 'string'))
      throw fail(`${key} must be a list of names`);
    return v as string[];
  };
  const created = names('created');
  const unknown = created.find((p) => !(CREATABLE as readonly string[]).includes(p));
  if (unknown !== undefined)
    throw fail(`created: ${JSON.stringify(unknown)} is not an object injection creates`);
  const record: InjectionRecord = {
    version: String(r.version ?? ''),
    initContainers: names('initContainers'),
    containers: names('containers'),
    created,
  };
  const ports = r.reservedPorts;
  if (ports !== undefined) {
    const p = ports as Record<string, unknown>;
    if (typeof p === 'object' && p !== null && p.appended === true) record.reservedPorts = { appended: true };
    else if (typeof p === 'object' && p !== null && (p.before === null || typeof p.before === 'string'))
      record.reservedPorts = { before: p.before as string | null };
    else throw fail('reservedPorts must be {"appended":true} or {"before":VALUE|null}');
  }
  return record;
}

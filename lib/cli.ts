import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import { configError } from './errors.ts';

/** The YAML parser, loaded only when a --config file is read: ~2 MB private memory in every process. */
const loadYaml = () => createRequire(import.meta.url)('yaml') as typeof import('yaml');

/**
 * One config path for every subcommand: flags, then EDGEMESH_* environment variables, then
 * an optional `--config FILE` (JSON or YAML, e.g. a mounted ConfigMap), then defaults.
 * Values are validated once here into a frozen object; every error names its flag.
 */
export type OptionType = 'string' | 'boolean' | 'integer' | 'list';

export interface OptionSpec {
  type: OptionType;
  description: string;
  default?: string | number | boolean | readonly string[];
  short?: string;
  /** For integers. */
  min?: number;
  max?: number;
  choices?: readonly string[];
  /** Extra check on the parsed value; returns a problem description or undefined. */
  validate?: (value: never) => string | undefined;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** Text after the option list: examples, notes. */
  details?: string;
  options: Record<string, OptionSpec>;
  /** Whether bare arguments are accepted (returned as `_`). */
  positionals?: boolean;
  /** How the bare arguments read in the usage line, e.g. `[FILE|DIR|-]...`. */
  positionalsUsage?: string;
  /**
   * Mappings the `--config` file may hold besides option values (e.g. the webhook's
   * `injection:` settings); returned raw under `sections` for the part to validate.
   */
  sections?: readonly string[];
  /**
   * A `--config` file that is a ConfigMap manifest (the shipped manifests/base/config.yaml,
   * or a rendered install holding it) is read from this data key, e.g. `webhook.yaml`.
   */
  configMapKey?: string;
  /** Keys of the config file that belong to another command reading the same file: skipped. */
  configIgnores?: readonly string[];
}

type ValueOf<O extends OptionSpec> = O['type'] extends 'boolean'
  ? boolean
  : O['type'] extends 'integer'
    ? number
    : O['type'] extends 'list'
      ? string[]
      : string;

export type ParsedOptions<S extends CommandSpec> = {
  readonly [K in keyof S['options']]: S['options'][K] extends { default: unknown }
    ? ValueOf<S['options'][K]>
    : ValueOf<S['options'][K]> | undefined;
} & {
  readonly _: readonly string[];
  readonly help: boolean;
  readonly sections: Readonly<Record<string, unknown>>;
};

const envName = (flag: string) => `EDGEMESH_${flag.toUpperCase().replace(/-/g, '_')}`;

function convert(flag: string, spec: OptionSpec, raw: unknown, source: string): unknown {
  const where = source === 'flag' ? `--${flag}` : `${flag} (from ${source})`;
  switch (spec.type) {
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      const s = String(raw).toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(s)) return true;
      if (['false', '0', 'no', 'off'].includes(s)) return false;
      throw configError(`${where}: expected true or false, got ${JSON.stringify(raw)}`);
    }
    case 'integer': {
      const s = String(raw).trim();
      if (!/^-?\d+$/.test(s)) throw configError(`${where}: expected an integer, got ${JSON.stringify(raw)}`);
      const n = Number(s);
      if (spec.min !== undefined && n < spec.min)
        throw configError(`${where}: must be >= ${spec.min}, got ${n}`);
      if (spec.max !== undefined && n > spec.max)
        throw configError(`${where}: must be <= ${spec.max}, got ${n}`);
      return n;
    }
    case 'list': {
      // Flags (repeatable) and env are comma-separated text; a config file may hold a list.
      const items =
        Array.isArray(raw) && source !== 'flag'
          ? raw.map(String)
          : (Array.isArray(raw) ? raw : [raw]).flatMap((r) => String(r).split(','));
      return items.map((s) => s.trim()).filter((s) => s.length > 0);
    }
    default: {
      if (typeof raw === 'object' && raw !== null) throw configError(`${where}: expected a string`);
      const s = String(raw);
      if (spec.choices && !spec.choices.includes(s)) {
        throw configError(`${where}: must be one of ${spec.choices.join(', ')}, got ${JSON.stringify(s)}`);
      }
      return s;
    }
  }
}

function readConfigFile(path: string, spec: CommandSpec): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw configError(`--config: cannot read ${path}: ${(err as Error).message}`);
  }
  let docs: unknown[];
  try {
    if (path.endsWith('.json')) docs = [JSON.parse(text)];
    else {
      const parsed = loadYaml().parseAllDocuments(text);
      for (const d of parsed) if (d.errors.length > 0) throw d.errors[0];
      docs = parsed.map((d) => d.toJS()).filter((v) => v !== null && v !== undefined);
    }
  } catch (err) {
    throw configError(`--config: ${path} is not valid JSON/YAML: ${(err as Error).message}`);
  }
  const configMaps = docs.filter(isConfigMap);
  if (configMaps.length > 0 || docs.length > 1) return fromConfigMap(path, configMaps, spec);
  const doc = docs[0];
  if (doc === undefined) return {};
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
    throw configError(`--config: ${path} must hold a mapping of option names to values`);
  return doc as Record<string, unknown>;
}

interface ConfigMapDoc {
  metadata?: { name?: string };
  data?: Record<string, unknown>;
}

const isConfigMap = (d: unknown): d is ConfigMapDoc =>
  typeof d === 'object' && d !== null && (d as { kind?: unknown }).kind === 'ConfigMap';

/** The settings in a ConfigMap's data key: the edgemesh-config one when several hold it. */
function fromConfigMap(path: string, configMaps: ConfigMapDoc[], spec: CommandSpec): Record<string, unknown> {
  const key = spec.configMapKey;
  if (!key)
    throw configError(
      `--config: ${path} holds Kubernetes manifests; 'edgemesh ${spec.name}' reads a mapping of option names to values`,
    );
  let found = configMaps.filter((c) => typeof c.data?.[key] === 'string');
  if (found.length > 1) found = found.filter((c) => c.metadata?.name === 'edgemesh-config');
  if (found.length !== 1)
    throw configError(
      `--config: ${path} holds ${found.length === 0 ? 'no' : 'several'} ConfigMap with data key ${key} (the shipped one is edgemesh-config in manifests/base/config.yaml)`,
    );
  const where = `${path} ConfigMap ${found[0].metadata?.name ?? '?'} data.${key}`;
  let doc: unknown;
  try {
    doc = loadYaml().parse(found[0].data?.[key] as string);
  } catch (err) {
    throw configError(`--config: ${where} is not valid YAML: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw configError(`--config: ${where} must hold a mapping of option names to values`);
  return doc as Record<string, unknown>;
}

/** The text of a file a flag names (a PEM); unreadable: a config error naming the flag and the file. */
export function readPem(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw configError(`--${flag}: cannot read ${file}: ${(err as Error).message}`);
  }
}

export function parseCommand<S extends CommandSpec>(
  spec: S,
  argv: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): ParsedOptions<S> {
  const parseOptions: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {
    help: { type: 'boolean', short: 'h' },
  };
  for (const [flag, o] of Object.entries(spec.options)) {
    parseOptions[flag] = {
      type: o.type === 'boolean' ? 'boolean' : 'string',
      ...(o.short ? { short: o.short } : {}),
      // A list flag may be given again (`-f a.yaml -f b.yaml`) as well as comma-separated.
      ...(o.type === 'list' ? { multiple: true } : {}),
    };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: [...argv], options: parseOptions, allowPositionals: true, strict: true });
  } catch (err) {
    throw configError(`${spec.name}: ${(err as Error).message} (see 'edgemesh ${spec.name} --help')`);
  }
  if (!spec.positionals && parsed.positionals.length > 0) {
    throw configError(`${spec.name}: unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  }
  const flags = parsed.values as Record<string, unknown>;
  const fileValues =
    'config' in spec.options && typeof flags.config === 'string'
      ? readConfigFile(flags.config, spec)
      : ({} as Record<string, unknown>);
  const sections: Record<string, unknown> = {};
  for (const key of Object.keys(fileValues)) {
    if (spec.sections?.includes(key)) {
      sections[key] = fileValues[key];
      delete fileValues[key];
    } else if (spec.configIgnores?.includes(key)) {
      delete fileValues[key];
    } else if (!(key in spec.options) || key === 'config') {
      throw configError(`--config: unknown option ${JSON.stringify(key)} for 'edgemesh ${spec.name}'`);
    }
  }
  const out: Record<string, unknown> = { _: parsed.positionals, help: flags.help === true, sections };
  for (const [flag, o] of Object.entries(spec.options)) {
    let value: unknown;
    if (flags[flag] !== undefined) value = convert(flag, o, flags[flag], 'flag');
    else if (env[envName(flag)] !== undefined) value = convert(flag, o, env[envName(flag)], envName(flag));
    else if (fileValues[flag] !== undefined) value = convert(flag, o, fileValues[flag], 'config file');
    else value = Array.isArray(o.default) ? [...o.default] : o.default;
    if (value !== undefined && o.validate) {
      const problem = o.validate(value as never);
      if (problem) throw configError(`--${flag}: ${problem}`);
    }
    out[flag] = value;
  }
  return Object.freeze(out) as ParsedOptions<S>;
}

export function helpText(spec: CommandSpec): string {
  const usage = `Usage: edgemesh ${spec.name} [options]${spec.positionalsUsage ? ` ${spec.positionalsUsage}` : ''}`;
  const lines = [usage, '', spec.summary, '', 'Options:'];
  const rows = Object.entries(spec.options).map(([flag, o]) => {
    const arg =
      o.type === 'boolean' ? '' : o.type === 'integer' ? ' N' : o.type === 'list' ? ' A,B,...' : ' VALUE';
    const def =
      o.default === undefined || (Array.isArray(o.default) && o.default.length === 0)
        ? ''
        : ` (default: ${String(o.default)})`;
    const choices = o.choices ? ` [${o.choices.join('|')}]` : '';
    return [
      `  ${o.short ? `-${o.short}, ` : ''}--${flag}${arg}`,
      `${o.description}${choices}${def}; env ${envName(flag)}`,
    ];
  });
  rows.push(['  -h, --help', 'show this help']);
  const width = Math.max(...rows.map((r) => r[0].length)) + 2;
  for (const [left, right] of rows) lines.push(left.padEnd(width) + right);
  if (spec.details) lines.push('', spec.details.trimEnd());
  return `${lines.join('\n')}\n`;
}

/** A subcommand: its spec plus what to run with the parsed options. */
export interface Subcommand<S extends CommandSpec = CommandSpec> {
  spec: S;
  // biome-ignore lint/suspicious/noConfusingVoidType: long-running parts resolve with nothing once listening.
  run(options: ParsedOptions<S>): Promise<number | undefined | void>;
}

export function defineCommand<S extends CommandSpec>(spec: S, run: Subcommand<S>['run']): Subcommand<S> {
  return { spec, run };
}

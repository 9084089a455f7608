/**
 * The init container's traffic capture: options → rules (data) → iptables-restore text →
 * applied through a Host. `edgemesh init` (cli.ts) is the only runtime user; the webhook
 * may use the option parsers to validate annotations at admission time.
 */
export { cleanupCapture, type InitConfig, type InstallReport, installCapture } from './apply.ts';
export { type Backend, type BackendChoice, type BackendName, detectBackend } from './backend.ts';
export { type Host, RecordingHost, type RunResult, realHost } from './host.ts';
export {
  type CaptureOptions,
  captureOptions,
  DEFAULT_OPTIONS,
  parseBooleanText,
  parseCidrList,
  parseIncludeRanges,
  parsePortList,
} from './options.ts';
export { parseSave, renderCleanup, renderInstall, type SavedTable } from './render.ts';
export { buildRules, type Rule, type Ruleset } from './rules.ts';

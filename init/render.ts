import { CHAIN_PREFIX, COMMENT_PREFIX, type Rule, type Ruleset } from './rules.ts';

/**
 * Rulesets → iptables-restore text (always applied with --noflush, so only our chains are
 * touched), and the parsing of `iptables-save -t nat` that lets one restore transaction
 * replace whatever an earlier run left: declaring a chain in restore input creates it or
 * flushes it, so re-running converges on the same ruleset instead of duplicating rules.
 */

/** The nat table as iptables-save shows it: user chains and `-A` lines, in order. */
export interface SavedTable {
  readonly chains: readonly string[];
  readonly rules: readonly string[];
}

export const EMPTY_TABLE: SavedTable = Object.freeze({ chains: [], rules: [] });

const BUILTIN_CHAINS = new Set(['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING']);

export function renderRule(rule: Rule): string {
  return [
    '-A',
    rule.chain,
    ...rule.match,
    '-m',
    'comment',
    '--comment',
    `${COMMENT_PREFIX}${rule.slug}`,
    ...rule.target,
  ].join(' ');
}

export const isOwnedChain = (chain: string): boolean => chain.startsWith(CHAIN_PREFIX);

/**
 * Lines of ours outside our own chains: jumps into an EDGEMESH_ chain, or anything marked
 * with our comment. These are deleted one by one (we never flush a built-in chain).
 */
function ownedForeignRules(current: SavedTable): string[] {
  return current.rules.filter((line) => {
    const chain = line.split(/\s+/)[1] ?? '';
    if (isOwnedChain(chain)) return false;
    return /\s-[jg]\s+EDGEMESH_/.test(line) || line.includes(COMMENT_PREFIX);
  });
}

const deleteOf = (saveLine: string) => `-D${saveLine.slice(2)}`;

/**
 * Restore text that leaves exactly `ruleset` installed, whatever of ours `current` holds:
 * our chains are (re)declared, which flushes them; old hooks are deleted; chains of ours
 * the ruleset no longer has are deleted; then every rule is appended. One transaction.
 */
export function renderInstall(ruleset: Ruleset, current: SavedTable = EMPTY_TABLE): string {
  const existingOwned = current.chains.filter(isOwnedChain);
  const stale = existingOwned.filter((c) => !ruleset.chains.includes(c));
  return [
    `*${ruleset.table}`,
    ...[...ruleset.chains, ...stale].map((c) => `:${c} - [0:0]`),
    ...ownedForeignRules(current).map(deleteOf),
    ...stale.map((c) => `-X ${c}`),
    ...ruleset.rules.map(renderRule),
    'COMMIT',
    '',
  ].join('\n');
}

/**
 * Restore text that removes everything of ours in `current` (hooks, then our chains), or
 * undefined when nothing of ours is there. Ownership is the builder's marks: the chain
 * prefix and the comment prefix.
 */
export function renderCleanup(current: SavedTable, table = 'nat'): string | undefined {
  const owned = current.chains.filter(isOwnedChain);
  const hooks = ownedForeignRules(current);
  if (owned.length === 0 && hooks.length === 0) return undefined;
  return [
    `*${table}`,
    ...owned.map((c) => `:${c} - [0:0]`),
    ...hooks.map(deleteOf),
    ...owned.map((c) => `-X ${c}`),
    'COMMIT',
    '',
  ].join('\n');
}

/** What `iptables-save -t nat` would show once `ruleset` is installed on an empty table. */
export function installedTable(ruleset: Ruleset): SavedTable {
  const rules = ruleset.rules.map(renderRule);
  return { chains: [...ruleset.chains], rules };
}

/**
 * Parses one table of iptables-save output. Only the first table block is read (we always
 * ask for one with `-t`); comments, counters and policies of built-in chains are ignored.
 */
export function parseSave(text: string): SavedTable {
  const chains: string[] = [];
  const rules: string[] = [];
  let inTable = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      if (inTable) break;
      inTable = true;
    } else if (!inTable || line === '' || line.startsWith('#')) {
      // outside the table, or a comment
    } else if (line === 'COMMIT') {
      break;
    } else if (line.startsWith(':')) {
      const name = line.slice(1).split(/\s+/)[0];
      if (name && !BUILTIN_CHAINS.has(name)) chains.push(name);
    } else if (line.startsWith('-A ')) {
      rules.push(line);
    }
  }
  return { chains, rules };
}

/** Slugs of our rules present in a saved table (iptables-save may quote the comment). */
export function installedSlugs(table: SavedTable): string[] {
  const slugs: string[] = [];
  for (const line of table.rules) {
    const m = /--comment\s+"?edgemesh\/([^"\s]+)"?/.exec(line);
    if (m) slugs.push(m[1]);
  }
  return slugs;
}

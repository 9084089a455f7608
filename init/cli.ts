import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
// Placeholder until this part lands; replace the whole file.
export const initCommand = defineCommand({ name: 'init', summary: 'init', options: {} }, async () => {
  throw configError('init: not built yet');
});

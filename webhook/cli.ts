import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
// Placeholder until the webhook lands in this folder.
export const webhookCommand = defineCommand(
  { name: 'webhook', summary: 'admission webhook', options: {} },
  async () => {
    throw configError('webhook: not built yet');
  },
);
export const injectCommand = defineCommand(
  { name: 'inject', summary: 'manual injection', options: {} },
  async () => {
    throw configError('inject: not built yet');
  },
);

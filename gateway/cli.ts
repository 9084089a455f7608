import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
// Placeholder until this part lands; replace the whole file.
export const gatewayCommand = defineCommand(
  { name: 'gateway', summary: 'gateway', options: {} },
  async () => {
    throw configError('gateway: not built yet');
  },
);

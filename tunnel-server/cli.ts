import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
// Placeholder until this part lands; replace the whole file.
export const tunnelServerCommand = defineCommand(
  { name: 'tunnel-server', summary: 'tunnel-server', options: {} },
  async () => {
    throw configError('tunnel-server: not built yet');
  },
);

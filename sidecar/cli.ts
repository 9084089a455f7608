import { defineCommand } from '../lib/cli.ts';
import { configError } from '../lib/errors.ts';
// Placeholder until this part lands; replace the whole file.
export const sidecarCommand = defineCommand(
  { name: 'sidecar', summary: 'sidecar', options: {} },
  async () => {
    throw configError('sidecar: not built yet');
  },
);

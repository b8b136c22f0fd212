// `atrest close NAME`: asks the daemon to flush, detach the loop device, stop serving NAME and wipe its keys.
import type { Argv } from 'yargs';
import { request } from '../../daemon/client.js';
import { defineCommand } from '../command.js';
import { requireRoot } from '../preconditions.js';

export const closeCommand = defineCommand({
  command: 'close <name>',
  describe: 'flush, detach the loop device, stop serving NAME and wipe its keys',
  options: (y: Argv) => y.positional('name', { type: 'string', demandOption: true }),
  verify: () => requireRoot(),
  action: async (a, ctx) => {
    await request(ctx.paths, { op: 'close', name: a.name });
  },
});

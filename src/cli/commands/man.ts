// `atrest man` (hidden): prints the atrest(8) page, rendered from the CLI's own --help texts (scripts/install uses it).
import type { Argv } from 'yargs';
import { defineCommand } from '../command.js';
import { manPage } from '../man-command.js';
import { ENTRY, version } from '../self.js';

export const manCommand = defineCommand({
  command: 'man',
  describe: false, // hidden: scripts/install renders atrest(8) with it
  options: (y: Argv) => y,
  action: async () => {
    const epoch = Number(process.env.SOURCE_DATE_EPOCH);
    const date = (Number.isFinite(epoch) && epoch > 0 ? new Date(epoch * 1000) : new Date())
      .toISOString()
      .slice(0, 10);
    process.stdout.write(await manPage(ENTRY, version(), date));
  },
});

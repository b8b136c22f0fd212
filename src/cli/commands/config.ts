// `atrest config check [FILE]`: loads the volumes configuration and the KEK provider configuration and reports problems.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { envValue } from '../../errors/env.js';
import { loadProviders } from '../../keys/index.js';
import { DEFAULT_CONFIG, loadConfig } from '../../daemon/config.js';
import { defineCommand } from '../command.js';
import { configChecked, providersChecked } from '../render/messages.js';

export const configCommand = defineCommand({
  command: 'config <action> [file]',
  describe: 'check the configuration file (atrest config check [FILE])',
  options: (y: Argv) =>
    y
      .positional('action', { type: 'string', choices: ['check'], demandOption: true })
      .positional('file', { type: 'string', describe: `default ${DEFAULT_CONFIG}` }),
  action: async (a, ctx) => {
    const file = resolve(a.file ?? envValue('ATREST_CONFIG') ?? DEFAULT_CONFIG);
    const cfg = await loadConfig(file);
    console.log(configChecked(file, cfg.volumes.length));
    const providers = await loadProviders(ctx.globals.providers);
    console.log(providersChecked(providers.path, providers.providers.size));
  },
});

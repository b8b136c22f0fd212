// `atrest daemon`: runs the daemon that serves open volumes in this process; `--stop` asks a running one to close all and exit.
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { fipsActive, requireFips } from '../../crypto/index.js';
import { envFlag, envValue, keyCheckIntervalSeconds } from '../../errors/env.js';
import { request, waitForDaemonExit } from '../../daemon/client.js';
import { Daemon } from '../../daemon/server.js';
import { parseUnreachableGrace } from '../../daemon/unreachable-grace.js';
import { fuseSettings, requireFuseBackend } from '../../fuse/backend.js';
import { defineCommand } from '../command.js';
import { requireFuse, requireRoot } from '../preconditions.js';

export const daemonCommand = defineCommand({
  command: 'daemon',
  describe: 'run the daemon that serves open volumes (started by open when needed)',
  options: (y: Argv) =>
    y
      .option('log-level', {
        type: 'string',
        default: 'info',
        choices: ['debug', 'info', 'warn', 'error'],
      })
      .option('stop', {
        type: 'boolean',
        default: false,
        describe: 'ask the running daemon to close all and exit',
      })
      .option('config', {
        type: 'string',
        describe:
          'volumes to open at start and on SIGHUP (JSON; env ATREST_CONFIG), e.g. /etc/atrest/volumes.json',
      })
      .option('key-check-interval', {
        type: 'number',
        describe:
          'seconds between KEK checks (revocation, new versions); default 5, env ATREST_KEY_CHECK_INTERVAL',
      })
      .option('key-unreachable-grace', {
        type: 'number',
        describe:
          'seconds volumes stay open while their key server (kmip) cannot be reached, then they lock; default 600, env ATREST_KEY_UNREACHABLE_GRACE',
      })
      .option('fuse-backend', {
        type: 'string',
        describe:
          'kernel (default: atrest speaks the FUSE protocol itself) or libfuse (the optional fallback); env ATREST_FUSE_BACKEND, config fuseBackend',
      })
      .option('fuse-workers', {
        type: 'number',
        describe:
          'threads serving FUSE requests per volume, kernel backend: 1-64, default one per core (2 to 8); env ATREST_FUSE_WORKERS',
      }),
  /** The daemon's settings from options, environment and global options; null for --stop. */
  verify: async (a, ctx) => {
    requireRoot();
    if (a.stop) return null;
    await requireFuse();
    const interval = keyCheckIntervalSeconds(a['key-check-interval']);
    const graceArg = a['key-unreachable-grace'];
    const keyUnreachableGraceMs =
      graceArg !== undefined
        ? parseUnreachableGrace(graceArg, '--key-unreachable-grace')
        : envValue('ATREST_KEY_UNREACHABLE_GRACE') !== undefined
          ? parseUnreachableGrace(envValue('ATREST_KEY_UNREACHABLE_GRACE'), 'ATREST_KEY_UNREACHABLE_GRACE')
          : undefined;
    const fips = ctx.globals.fips || envFlag('ATREST_FIPS');
    if (fips && !fipsActive()) requireFips();
    const config = a.config ?? envValue('ATREST_CONFIG');
    const fuse = fuseSettings({ backend: a['fuse-backend'], workers: a['fuse-workers'] }, process.env);
    if (fuse.backend !== undefined) requireFuseBackend(fuse.backend);
    return { interval, keyUnreachableGraceMs, fips, config, fuse };
  },
  action: async (a, ctx, settings) => {
    const { paths } = ctx;
    if (settings === null) {
      await request(paths, { op: 'shutdown' });
      await waitForDaemonExit(paths, 60_000);
      return;
    }
    const { interval, keyUnreachableGraceMs, fips, config, fuse } = settings;
    const d = new Daemon({
      paths: { ...paths, providers: ctx.globals.providers },
      logLevel: a['log-level'],
      ...(config === undefined || config === '' ? {} : { config: resolve(config) }),
      keyCheckIntervalMs: Math.round(interval * 1000),
      ...(keyUnreachableGraceMs === undefined ? {} : { keyUnreachableGraceMs }),
      fips,
      fuse,
    });
    await d.start();
    ctx.keepRunning = true;
  },
});

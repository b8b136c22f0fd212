// The daemon's FUSE backend choice reaches serveDisk and status: option over configuration file over the kernel default.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CryptoPool } from '../crypto/index.js';
import { isAtrestError } from '../errors/index.js';
import type { FuseDisk, ServeDiskOptions } from '../fuse/index.js';
import { KeyManager } from '../keys/index.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { parseConfig } from './config.js';
import type { RuntimePaths } from './paths.js';
import { VolumeService, type VolumeServiceOptions } from './service.js';

const dir = useTempDir('atrest-fusebackend-', { perTest: true });
let pool: CryptoPool;
let svc: VolumeService | null = null;
const served: ServeDiskOptions[] = [];

function paths(): RuntimePaths {
  const state = join(dir(), 'state');
  return {
    runDir: join(dir(), 'run'),
    stateDir: state,
    socket: join(state, 'control.sock'),
    pidFile: join(state, 'daemon.pid'),
    lockDir: join(state, 'locks'),
    logFile: join(state, 'daemon.log'),
    keyStore: join(dir(), 'keys'),
    auditLog: join(dir(), 'audit.log'),
    providers: join(dir(), 'providers.json'),
  };
}

/** Records what the service asked for and serves nothing. */
function recordServe(opts: ServeDiskOptions): Promise<FuseDisk> {
  served.push(opts);
  return Promise.resolve({
    mountPath: opts.mountPath,
    backend: opts.backend ?? 'kernel',
    connection: 0,
    options: '',
    inFlight: 0,
    close: () => Promise.resolve(),
  });
}

function service(fuse?: VolumeServiceOptions['fuse']): VolumeService {
  svc = new VolumeService(paths(), pino({ level: 'silent' }), {
    pool,
    serveDisk: recordServe,
    keyCheckIntervalMs: 60_000,
    ...(fuse === undefined ? {} : { fuse }),
  });
  return svc;
}

async function image(name: string): Promise<{ image: string; keyStore: string }> {
  const keyStore = join(dir(), `store-${name}`);
  const img = join(dir(), `${name}.img`);
  await new KeyManager({ keyStoreDir: keyStore }).format({ imagePath: img, dataSize: 1 << 20 });
  return { image: img, keyStore };
}

async function openVolume(s: VolumeService, name: string): Promise<void> {
  const v = await image(name);
  await s.open({ op: 'open', image: v.image, name, readOnly: false, loop: false, keyStore: v.keyStore });
}

beforeEach(async () => {
  await mkdir(join(dir(), 'run'));
  pool = new CryptoPool({ workers: 1 });
  served.length = 0;
});
afterEach(async () => {
  await svc?.closeAll();
  svc = null;
  await pool.destroy();
});

describe('FUSE backend of the daemon', () => {
  it('serves with the kernel backend by default and shows it in status', async () => {
    const s = service();
    await openVolume(s, 'a');
    expect(served[0]?.backend).toBe('kernel');
    expect(s.status('a')[0]?.fuseBackend).toBe('kernel');
  });

  it('passes the chosen backend, workers and forced minor to serveDisk', async () => {
    const s = service({ backend: 'libfuse', workers: 2, maxMinor: 33 });
    await openVolume(s, 'b');
    expect(served[0]).toMatchObject({ backend: 'libfuse', workers: 2, maxMinor: 33 });
    expect(s.status('b')[0]?.fuseBackend).toBe('libfuse');
  });

  it("takes the configuration file's fuseBackend unless an option chose one", async () => {
    const v = await image('c');
    const cfg = parseConfig(
      {
        fuseBackend: 'libfuse',
        volumes: [{ name: 'c', image: v.image, key: { keyFile: join(dir(), 'none') } }],
      },
      '/etc/atrest/volumes.json',
    );
    expect(cfg.fuseBackend).toBe('libfuse');
    const s = service();
    await s.applyConfig(cfg); // the volume itself fails (no key file): the backend is taken anyway
    expect(s.fuseBackend).toBe('libfuse');
    expect(service({ backend: 'kernel', workers: 4 }).fuseBackend).toBe('kernel');
    await s.closeAll();
  });

  it('refuses an unknown fuseBackend in the configuration file, with the other problems', () => {
    let err: unknown;
    try {
      parseConfig({ fuseBackend: 'fuse3', volumes: [{ name: 'x' }] }, '/etc/atrest/volumes.json');
    } catch (e) {
      err = e;
    }
    expect(isAtrestError(err) && err.code).toBe('USAGE');
    expect((err as Error).message).toMatch(/2 problem\(s\)/);
    expect((err as Error).message).toMatch(
      /\/etc\/atrest\/volumes\.json: fuseBackend: unknown FUSE backend "fuse3": choose kernel or libfuse/,
    );
  });
});

// VolumeService without FUSE (disk files are not served): the KEK check keeps running after every kind of
// pass, and every key a volume holds leaves the pool's keyring on lock, close and failure.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CryptoPool, type PoolKey } from '../crypto/index.js';
import { KeyManager, KmipKekProvider, type KeyEvent } from '../keys/index.js';
import { FakeKmipServer, fakeTls } from '../keys/kmip/fake-server.test-helper.js';
import { formatLuks2 } from '../luks2/index.js';
import type { FuseDisk, ServeDiskOptions } from '../fuse/index.js';
import { VolumeService, type VolumeServiceOptions } from './service.js';
import type { RuntimePaths } from './paths.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';

const DATA_SIZE = 1 << 20;
/** Two conversion batches (8 MiB each) at RATE: the first runs when reencrypt returns. */
const CONV_SIZE = 16 << 20;
const RATE = 16 << 20;
const tmp = useTempDir('atrest-svc-', { perTest: true });
let dir: string;
let pool: CryptoPool;
let svc: VolumeService;
let n = 0;
const fifos: string[] = [];

function paths(): RuntimePaths {
  const state = join(dir, 'state');
  return {
    runDir: join(dir, 'run'),
    stateDir: state,
    socket: join(state, 'control.sock'),
    pidFile: join(state, 'daemon.pid'),
    lockDir: join(state, 'locks'),
    logFile: join(state, 'daemon.log'),
    keyStore: join(dir, 'keys'),
    auditLog: join(dir, 'audit.log'),
    providers: join(dir, 'providers.json'),
  };
}

/** Serves nothing: the tests use the Volume through the service only. */
function fakeServe({ mountPath, backend }: ServeDiskOptions): Promise<FuseDisk> {
  return Promise.resolve({
    mountPath,
    backend: backend ?? 'kernel',
    connection: 0,
    options: '',
    inFlight: 0,
    close: () => Promise.resolve(),
  });
}

function service(opts: Partial<VolumeServiceOptions> = {}): VolumeService {
  return new VolumeService(paths(), pino({ level: 'silent' }), {
    keyCheckIntervalMs: 50,
    keyCheckTimeoutMs: 1000,
    pool,
    serveDisk: fakeServe,
    ...opts,
  });
}

beforeEach(async () => {
  dir = tmp();
  await mkdir(join(dir, 'run'));
  pool = new CryptoPool({ workers: 1 });
});
afterEach(async () => {
  for (const f of fifos.splice(0)) await releaseFifo(f);
  await svc.closeAll();
  await pool.destroy();
});

/** A volume bound to the platform key of its own key store (so each can be revoked alone). */
async function platformVolume(dataSize = DATA_SIZE): Promise<{ image: string; store: string; name: string }> {
  const name = `v${++n}`;
  const store = join(dir, `store-${name}`);
  const image = join(dir, `${name}.img`);
  await new KeyManager({ keyStoreDir: store }).format({ imagePath: image, dataSize });
  return { image, store, name };
}

async function openPlatform(dataSize = DATA_SIZE): Promise<{ image: string; store: string; name: string }> {
  const v = await platformVolume(dataSize);
  await svc.open({
    op: 'open',
    image: v.image,
    name: v.name,
    readOnly: false,
    loop: false,
    keyStore: v.store,
  });
  return v;
}

function locked(name: string): boolean {
  return svc.status(name)[0]?.encryption.locked === true;
}

async function until(fn: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const start = Date.now();
  while (!fn()) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Moves the volume's platform KEK away (revocation); returns how to put it back. */
async function revoke(store: string): Promise<() => Promise<void>> {
  const kek = join(store, 'platform-kek.v1');
  await rename(kek, `${kek}.away`);
  return () => rename(`${kek}.away`, kek);
}

/** KMIP providers configured in the test's providers.json, one key name per volume. */
const kmipEntries: Record<string, object> = {};

/** A volume bound to a KMIP key (its own key name) on the fake server `server`, opened. */
async function openKmip(
  server: FakeKmipServer,
  kmip: KmipKekProvider,
): Promise<{ name: string; keyName: string }> {
  const name = `v${++n}`;
  const keyName = `kek-${name}`;
  const image = join(dir, `${name}.img`);
  kmipEntries[name] = {
    type: 'kmip',
    host: '127.0.0.1',
    ca: '/etc/atrest/kmip-ca.pem',
    cert: '/etc/atrest/kmip.pem',
    key: '/etc/atrest/kmip.key',
    keyName,
  };
  await writeFile(paths().providers, JSON.stringify({ providers: kmipEntries }), { mode: 0o644 });
  server.add(keyName, 1);
  const km = new KeyManager({ providersFile: paths().providers, kmip });
  await km.format({ imagePath: image, dataSize: DATA_SIZE }, name);
  await svc.open({ op: 'open', image, name, readOnly: false, loop: false });
  return { name, keyName };
}

/** Replaces the platform KEK by a FIFO: the provider's read of it blocks until releaseFifo. */
async function hangProvider(store: string): Promise<void> {
  const kek = join(store, 'platform-kek.v1');
  await rename(kek, `${kek}.away`);
  execFileSync('mkfifo', ['-m', '600', kek]);
  fifos.push(kek);
}

async function releaseFifo(path: string): Promise<void> {
  // a writer that comes and goes lets every blocked reader's open() finish (then it reads EOF)
  for (let i = 0; i < 3; i++) {
    const fh = await open(path, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => null);
    await fh?.close();
  }
  await unlink(path).catch(() => undefined);
}

/** Waits until no KEK check pass has ended for `ms`: a pass is hanging on a provider. */
async function stalled(ms: number): Promise<void> {
  let last = svc.keyCheckPasses;
  let since = Date.now();
  await until(() => {
    if (svc.keyCheckPasses !== last) {
      last = svc.keyCheckPasses;
      since = Date.now();
    }
    return Date.now() - since >= ms;
  }, 'a KEK check pass to hang');
}

async function passes(count: number): Promise<void> {
  const from = svc.keyCheckPasses;
  await until(() => svc.keyCheckPasses >= from + count, `${count} more KEK check passes`);
}

/** The check still runs: a fresh volume whose KEK is revoked now gets locked. */
async function stillLocks(): Promise<void> {
  const v = await openPlatform();
  await revoke(v.store);
  await until(() => locked(v.name), `revocation of ${v.name} to lock it`);
  await svc.close(v.name);
}

describe('KEK check (watchdog)', () => {
  it('keeps running and locking after every kind of pass', async () => {
    const audit: KeyEvent[] = [];
    let throwOn: string | null = null;
    const kmipServer = new FakeKmipServer();
    const kmip = new KmipKekProvider({ connect: kmipServer.connect, readTls: fakeTls });
    let clockOffset = 0;
    svc = service({
      kmip,
      keyUnreachableGraceMs: 600_000,
      graceClock: () => Date.now() + clockOffset,
      audit: (e) => {
        audit.push(e);
        if (e.event === 'lock' && (e as { name?: string }).name === throwOn)
          throw new Error('audit sink down');
      },
    });
    svc.startKeyChecks();

    // no volumes at all
    await passes(3);
    await stillLocks();

    // a volume without a binding (passphrase)
    const pass = randomBytes(32);
    const plainImage = join(dir, 'pass.img');
    await formatLuks2({
      imagePath: plainImage,
      dataSize: DATA_SIZE,
      passphrase: pass,
      pbkdf2Iterations: 1000,
    });
    await svc.open({
      op: 'open',
      image: plainImage,
      name: 'pass',
      readOnly: false,
      loop: false,
      passphrase: Buffer.from(pass),
    });
    await passes(3);
    await stillLocks();

    // a pass that locks, and one whose lock throws (the audit sink fails)
    const a = await openPlatform();
    const b = await openPlatform();
    throwOn = b.name;
    await revoke(a.store);
    await revoke(b.store);
    await until(() => locked(a.name) && locked(b.name), 'both revoked volumes to lock');
    await passes(3);
    await stillLocks();

    // a re-wrap pass: a new platform KEK version is picked up
    const c = await openPlatform();
    await new KeyManager({ keyStoreDir: c.store }).rotatePlatform();
    await until(() => svc.status(c.name)[0]?.encryption.kekVersion === 2, 're-wrap to version 2');
    await passes(3);
    await stillLocks();

    // a provider that hangs: the other volumes are still checked meanwhile, and the hung one locks
    // once its provider has not answered within the bound
    const h = await openPlatform();
    const e = await openPlatform();
    await hangProvider(h.store);
    await revoke(e.store);
    await until(() => locked(e.name), 'the revoked volume to lock while another provider hangs');
    await until(() => locked(h.name), 'the volume whose provider hangs to lock');
    expect(svc.status(h.name)[0]?.encryption.lockedReason).toMatch(/key revoked or unavailable: platform:/);
    await passes(3);
    await stillLocks();

    // a volume closed during a pass (its provider hangs while it closes)
    const g = await openPlatform();
    await hangProvider(g.store);
    await stalled(200); // a pass is now waiting on g's provider (the bound is 1000 ms)
    await svc.close(g.name);
    await passes(3);
    expect(audit.some((x) => x.event === 'lock' && (x as { name?: string }).name === g.name)).toBe(false);
    await stillLocks();

    // a key server that cannot be reached: the volume stays open with a warning in status while the
    // check goes on (other volumes still lock); reachable again ends the warning
    const warning = (name: string): unknown => svc.status(name)[0]?.encryption.keyServerUnreachable;
    const k = await openKmip(kmipServer, kmip);
    kmipServer.down = true;
    await until(() => warning(k.name) !== undefined, 'the key-server-unreachable warning');
    expect(warning(k.name)).toMatchObject({
      detail: expect.stringContaining(`ref:${k.name} version 1`) as unknown,
    });
    await passes(3);
    expect(locked(k.name)).toBe(false);
    await stillLocks();
    expect(locked(k.name)).toBe(false);
    kmipServer.down = false;
    await until(() => warning(k.name) === undefined, 'the warning to end when the server answers');
    await passes(3);
    expect(locked(k.name)).toBe(false);

    // a key server that accepts and never answers counts as unreachable too (each call bounded):
    // open through the grace period, locked once it is over
    kmipServer.hang = true;
    await until(() => warning(k.name) !== undefined, 'the warning for a silent key server');
    await passes(3);
    expect(locked(k.name)).toBe(false);
    clockOffset = 600_001;
    await until(() => locked(k.name), 'the lock after the grace period');
    expect(svc.status(k.name)[0]?.encryption.lockedReason).toMatch(
      /^key server unreachable for longer than the grace period \(600 s\): ref:v\d+ version 1$/,
    );
    kmipServer.hang = false;
    clockOffset = 0;
    await passes(3);
    await stillLocks();

    // a key the server reports revoked locks at the next check: no grace
    const r = await openKmip(kmipServer, kmip);
    kmipServer.down = false;
    for (const key of kmipServer.keys.values()) if (key.name === r.keyName) key.state = 'deactivated';
    await until(() => locked(r.name), 'the revoked KMIP key to lock its volume');
    expect(svc.status(r.name)[0]?.encryption.lockedReason).toMatch(
      /^key revoked or unavailable: ref:v\d+ version 1$/,
    );
    await passes(3);
    await stillLocks();
  }, 120_000);
});

/** What the pool's keyring holds beyond `base` keys: none means every volume key was wiped. */
function keysBeyond(base: number): { keys: number; slots: number } {
  const u = pool.keyringUsage();
  return { keys: u.keys - base, slots: u.slots - base };
}

function expectKeyringClean(): void {
  expect(pool.keyringUsage()).toEqual({ keys: 0, slots: 0, nonZeroBytes: 0 });
}

/** Fills the keyring so that exactly `free` slots stay free; returns how to empty it again. */
async function fillKeyring(free: number): Promise<{ count: number; wipe: () => Promise<void> }> {
  const held: PoolKey[] = [];
  for (;;) {
    const k = randomBytes(64);
    k[0] = (k[32] ?? 0) ^ 1;
    try {
      held.push(await pool.addKey(k));
    } catch {
      break;
    }
  }
  for (let i = 0; i < free; i++) await held.pop()?.wipe();
  return { count: held.length, wipe: async () => void (await Promise.all(held.map((k) => k.wipe()))) };
}

/** Starts an online reencryption of an open volume and pauses it after its first batch. */
async function startPaused(name: string): Promise<void> {
  await svc.reencrypt(name, [], RATE);
  svc.controlConversion(name, 'pause');
  const conv = svc.status(name)[0]?.conversion;
  expect(conv?.mode).toBe('reencrypt');
  expect(conv?.state).not.toBe('done');
}

/** Opens a platform volume with a reencryption under way (paused half way). */
async function reencrypting(): Promise<{ image: string; store: string; name: string }> {
  const v = await openPlatform(CONV_SIZE);
  await startPaused(v.name);
  return v;
}

describe('volume keys leave the keyring', () => {
  it('on lock during an online reencryption (the old key too)', async () => {
    svc = service();
    const v = await reencrypting();
    expect(keysBeyond(0)).toEqual({ keys: 2, slots: 2 }); // new key and old key
    svc.startKeyChecks();
    await revoke(v.store);
    await until(() => locked(v.name), 'lock');
    expectKeyringClean();
  });

  it('on close during an online reencryption (the old key too)', async () => {
    svc = service();
    const v = await reencrypting();
    await svc.close(v.name);
    expectKeyringClean();
  });

  it('when open fails after a key was added, with and without a conversion to resume', async () => {
    let failAt: string | null = null;
    svc = service({
      failPoint: (p) => {
        if (p === failAt) throw new Error(`injected failure at ${p}`);
      },
    });
    const v = await platformVolume(CONV_SIZE);
    const req = {
      op: 'open' as const,
      image: v.image,
      name: v.name,
      readOnly: false,
      loop: false,
      keyStore: v.store,
      maxRate: RATE,
    };
    failAt = 'open-key-added';
    await expect(svc.open(req)).rejects.toThrow(/injected failure/);
    expectKeyringClean();

    // an image whose reencryption was started and interrupted: open resumes it with two keys
    failAt = null;
    await svc.open(req);
    await startPaused(v.name);
    await svc.close(v.name);
    expectKeyringClean();
    for (const at of ['open-key-added', 'open-prepared']) {
      failAt = at;
      await expect(svc.open(req)).rejects.toThrow(/injected failure/);
      expectKeyringClean();
    }
    // the keyring fills up between the new and the old key
    failAt = null;
    const filler = await fillKeyring(1);
    await expect(svc.open(req)).rejects.toMatchObject({ code: 'USAGE' });
    expect(keysBeyond(filler.count)).toEqual({ keys: 0, slots: 0 });
    await filler.wipe();
    expectKeyringClean();
    // and a later step of open fails (serving the disk file)
    const failing = service({ serveDisk: () => Promise.reject(new Error('no FUSE today')) });
    await expect(failing.open(req)).rejects.toThrow(/no FUSE today/);
    expectKeyringClean();
    // it still opens and resumes
    await svc.open(req);
    expect(keysBeyond(0)).toEqual({ keys: 2, slots: 2 });
  });

  it('when starting an online reencryption fails after its keys were added', async () => {
    let failAt: string | null = null;
    svc = service({
      failPoint: (p) => {
        if (p === failAt) throw new Error(`injected failure at ${p}`);
      },
    });
    const v = await openPlatform();
    expect(keysBeyond(0)).toEqual({ keys: 1, slots: 1 });
    failAt = 'reencrypt-prepared';
    await expect(svc.reencrypt(v.name, [], RATE)).rejects.toThrow(/injected failure/);
    expect(keysBeyond(0)).toEqual({ keys: 1, slots: 1 }); // only the volume's own key
    await svc.close(v.name);
    expectKeyringClean();

    // keyring full after the new key: the old key cannot be added
    failAt = null;
    const w = await openPlatform();
    const filler = await fillKeyring(1);
    await expect(svc.reencrypt(w.name, [], RATE)).rejects.toMatchObject({ code: 'USAGE' });
    expect(keysBeyond(filler.count)).toEqual({ keys: 1, slots: 1 });
    await filler.wipe();
    await svc.close(w.name);
    expectKeyringClean();
  });
});

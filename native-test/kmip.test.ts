// Customer keys in a real KMIP server (pykmip-server, issue 13): key use, revoke while writing, wrong client certificate, server down at open and while open (grace), new versions (run as root).
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KmipClient } from '../src/keys/kmip/client.js';
import { atrestOk, encryptionOf, makeAtrestEnv, type AtrestEnv } from './helpers/cli.js';
import { ddBlock, sha256File, writeDisk } from './helpers/disk.js';
import { startKmipServer, type CertPair, type KmipTestServer } from './helpers/kmip-server.js';
import { start } from './helpers/load.js';

/** Short check interval; locking is asserted within LOCK_WITHIN_MS (generous margin on a loaded machine). */
const CHECK_INTERVAL_S = 1;
const LOCK_WITHIN_MS = 10_000;
/** The grace period of the server-down-while-open test (seconds). */
const GRACE_S = 20;

let kms: KmipTestServer;
let t: AtrestEnv;
const children: ChildProcess[] = [];

beforeAll(async () => {
  kms = await startKmipServer();
}, 120_000);
afterAll(async () => {
  await kms?.cleanup();
});
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-kmip-');
  t.env.ATREST_KEY_CHECK_INTERVAL = String(CHECK_INTERVAL_S);
});
afterEach(async () => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  await t.cleanup();
  if (!kms.running) await kms.start();
}, 120_000);

/**
 * Configures provider `name` (a kmip entry in the test's providers.json) for a fresh key name on the
 * test server, with the given client certificate (default: the good one). Returns the key name.
 */
async function configure(name: string, cert: CertPair = kms.client, keyName?: string): Promise<string> {
  const dir = join(t.dir, 'kmip');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'client.pem'), key: join(dir, 'client.key') };
  await copyFile(kms.caPath, files.ca);
  await copyFile(cert.certPath, files.cert);
  await copyFile(cert.keyPath, files.key);
  await chmod(files.ca, 0o644);
  await chmod(files.cert, 0o644);
  await chmod(files.key, 0o600);
  const kn = keyName ?? `atrest-test-${randomBytes(6).toString('hex')}`;
  await writeFile(
    join(t.dir, 'providers.json'),
    JSON.stringify({
      providers: { [name]: { type: 'kmip', host: kms.host, port: kms.port, ...files, keyName: kn } },
    }),
    { mode: 0o644 },
  );
  return kn;
}

const must = (args: string[]): Promise<string> => atrestOk(t, args);

/** A platform-key image with a recovery key slot; returns the image and a file holding the recovery key. */
async function imageWithRecovery(): Promise<{ img: string; recovery: string }> {
  const img = join(t.dir, `r-${randomBytes(3).toString('hex')}.img`);
  await must(['format', img, '--size', '16M']);
  const r = await t.atrest(['key', 'add-recovery', img, '--iter-time', '100']);
  expect(r.code, r.stderr).toBe(0);
  const recovery = join(t.dir, 'recovery.key');
  await writeFile(recovery, r.stdout.trim(), { mode: 0o600 });
  return { img, recovery };
}

async function until<T>(fn: () => Promise<T | undefined | false>, what: string, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

const addr = (): string => `${kms.host}:${kms.port}`;

describe('kmip: customer keys in a KMIP server', () => {
  it('key use creates and activates the key; revoked on the server while fio writes: locked within the interval, EIO, nothing more written; a recovery key opens it', async () => {
    const keyName = await configure('fleet');
    const { img, recovery } = await imageWithRecovery();
    const used = await must(['key', 'use', img, '--kek', 'kmip:fleet']);
    expect(used).toMatch(
      /created and activated AES-256 key \S+ \(version 1\) on the KMIP server of ref:fleet/,
    );
    expect(used).toContain('now bound to ref:fleet (version 1)');
    // the key is on the server, active, under the configured name
    const c = new KmipClient(kms.endpoint(10_000));
    try {
      const uids = await c.locate(keyName);
      expect(uids).toHaveLength(1);
      expect(await c.getAttributes(uids[0] ?? '')).toMatchObject({
        state: 'active',
        name: keyName,
        version: 1,
      });
    } finally {
      await c.close();
    }
    // the token names only the reference
    const header = (await readFile(img)).subarray(0, 64 * 1024).toString('latin1');
    expect(header).toContain('"atrest_kek":"ref:fleet"');
    expect(header).not.toContain(kms.host);
    expect(header).not.toContain('client.key');

    const disk = await must(['open', img, 'r']);
    expect(await encryptionOf(t, 'r')).toMatchObject({
      keySource: 'customer',
      kek: 'ref:fleet',
      locked: false,
    });
    await writeDisk(disk, 0, randomBytes(64 * 1024));
    expect(await ddBlock(disk, 1)).toEqual({ ok: true, eio: false });

    const fio = start(children, 'fio', [
      '--name=load',
      `--filename=${disk}`,
      '--rw=randwrite',
      '--bs=4k',
      '--ioengine=psync',
      '--time_based',
      '--runtime=60',
      '--size=8M',
      '--end_fsync=0',
    ]);
    await new Promise((r) => setTimeout(r, 1500));
    const revoked = await must(['key', 'revoke', '--kek', 'kmip:fleet']);
    const revokedAt = Date.now();
    expect(revoked).toMatch(/^revoked ref:fleet \(KMIP key \S+\)$/);
    const enc = await until(
      async () => {
        const e = await encryptionOf(t, 'r');
        return e.locked ? e : undefined;
      },
      'the volume to lock',
      LOCK_WITHIN_MS + 5_000,
    );
    expect(enc.lockedReason).toMatch(/^key revoked or unavailable: ref:fleet version 1$/);
    expect(Date.parse(enc.lockedAt ?? '') - revokedAt).toBeLessThan(LOCK_WITHIN_MS);
    const f = await fio.done;
    expect(f.code, 'fio stops with an error').not.toBe(0);
    expect(f.stderr + f.stdout).toMatch(/Input\/output error|EIO/);
    expect(f.exitedAt - revokedAt).toBeLessThan(LOCK_WITHIN_MS + 5_000);
    const locked = await sha256File(img);
    for (let i = 0; i < 3; i++) expect(await ddBlock(disk, i)).toEqual({ ok: false, eio: true });
    expect(await sha256File(img)).toBe(locked);
    await must(['close', 'r']);

    // a revoked KMIP key cannot be restored: the key cannot open it, the recovery key does
    const restore = await t.atrest(['key', 'restore', '--kek', 'kmip:fleet']);
    expect(restore.code).toBe(2);
    expect(restore.stderr).toContain('a revoked KMIP key cannot be restored');
    const refused = await t.atrest(['open', img, 'r']);
    expect(refused.code).toBe(6);
    expect(refused.stderr).toMatch(
      /key revoked or unavailable: kmip:fleet key \S+ on 127\.0\.0\.1:\d+ is deactivated/,
    );
    expect(refused.stderr).not.toMatch(/\n\s+at /);
    const again = await must(['open', img, 'r', '--key-file', recovery]);
    expect(await ddBlock(again, 3)).toEqual({ ok: true, eio: false });
    await must(['close', 'r']);
  }, 180_000);

  it('a client certificate the server does not accept: key use and open fail with a clear error naming the server', async () => {
    await configure('fleet', kms.makeClientCert('stranger', { otherCa: true }));
    const { img } = await imageWithRecovery();
    const r = await t.atrest(['key', 'use', img, '--kek', 'kmip:fleet']);
    expect(r.code).toBe(6);
    expect(r.stderr).toContain(addr());
    expect(r.stderr).toMatch(/certificate|refused|handshake/i);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    // bound with the good certificate, then the host's certificate is replaced by one the server refuses
    const keyName = await configure('fleet');
    await must(['key', 'use', img, '--kek', 'kmip:fleet']);
    await configure('fleet', kms.makeClientCert('noauth', { clientAuth: false }), keyName);
    const o = await t.atrest(['open', img, 'r']);
    expect(o.code).toBe(6);
    expect(o.stderr).toContain(addr());
    expect(o.stderr).toMatch(/certificate|refused|authentication/i);
    expect(o.stderr).not.toMatch(/\n\s+at /);
  }, 120_000);

  it('server down at open: a clear error naming the address', async () => {
    await configure('fleet');
    const { img } = await imageWithRecovery();
    await must(['key', 'use', img, '--kek', 'kmip:fleet']);
    await kms.stop();
    const o = await t.atrest(['open', img, 'r'], { timeoutMs: 60_000 });
    expect(o.code).toBe(6);
    expect(o.stderr).toContain(addr());
    expect(o.stderr).toMatch(/unreachable|cannot be reached|refused/i);
    expect(o.stderr).not.toMatch(/\n\s+at /);
  }, 120_000);

  it(`server down while open: a warning in status and the log, recovery when it is back, locked only after the grace period (${GRACE_S} s)`, async () => {
    t.env.ATREST_KEY_UNREACHABLE_GRACE = String(GRACE_S);
    await configure('fleet');
    const { img } = await imageWithRecovery();
    await must(['key', 'use', img, '--kek', 'kmip:fleet']);
    const disk = await must(['open', img, 'r']);
    expect(await ddBlock(disk, 1)).toEqual({ ok: true, eio: false });

    // a blip: warned, still served, recovered
    await kms.stop();
    const w = await until(
      async () => (await encryptionOf(t, 'r')).keyServerUnreachable,
      'the unreachable warning',
      LOCK_WITHIN_MS,
    );
    expect(w.detail).toContain('ref:fleet version 1');
    expect(await ddBlock(disk, 2)).toEqual({ ok: true, eio: false });
    const text = await must(['status', 'r']);
    expect(text).toMatch(/WARNING\s+key server unreachable since \S+; locks at \S+/);
    await kms.start();
    await until(
      async () => (await encryptionOf(t, 'r')).keyServerUnreachable === undefined,
      'the warning to clear',
      LOCK_WITHIN_MS + 10_000,
    );
    expect((await encryptionOf(t, 'r')).locked).toBe(false);

    // an outage longer than the grace: served through it, then locked
    await kms.stop();
    const stoppedAt = Date.now();
    await until(async () => (await encryptionOf(t, 'r')).keyServerUnreachable, 'the warning', LOCK_WITHIN_MS);
    expect(await ddBlock(disk, 3)).toEqual({ ok: true, eio: false });
    const enc = await until(
      async () => {
        const e = await encryptionOf(t, 'r');
        return e.locked ? e : undefined;
      },
      'the lock after the grace period',
      GRACE_S * 1000 + LOCK_WITHIN_MS + 10_000,
    );
    const lockedAfter = Date.parse(enc.lockedAt ?? '') - stoppedAt;
    expect(lockedAfter).toBeGreaterThanOrEqual(GRACE_S * 1000 - 1000);
    expect(lockedAfter).toBeLessThan(GRACE_S * 1000 + LOCK_WITHIN_MS);
    expect(enc.lockedReason).toMatch(
      new RegExp(
        `^key server unreachable for longer than the grace period \\(${GRACE_S} s\\): ref:fleet version 1$`,
      ),
    );
    expect(enc.keyServerUnreachable).toBeUndefined();
    expect(await ddBlock(disk, 4)).toEqual({ ok: false, eio: true });
    const log = await readFile(join(t.dir, 'state', 'daemon.log'), 'utf8');
    expect(log.match(/"event":"key-server-unreachable"/g)).toHaveLength(2); // once per outage
    expect(log.match(/"event":"key-server-reachable"/g)).toHaveLength(1);
    await must(['close', 'r']);
  }, 180_000);

  it('a new version on the server (same name, higher version) is picked up and re-wrapped while open', async () => {
    const keyName = await configure('fleet');
    const { img } = await imageWithRecovery();
    await must(['key', 'use', img, '--kek', 'fleet']);
    await must(['open', img, 'r']);
    expect(await encryptionOf(t, 'r')).toMatchObject({ kek: 'ref:fleet', kekVersion: 1 });
    const c = new KmipClient(kms.endpoint(10_000));
    try {
      await c.activate(await c.create(keyName, 2));
    } finally {
      await c.close();
    }
    await until(
      async () => (await encryptionOf(t, 'r')).kekVersion === 2,
      're-wrap to version 2',
      LOCK_WITHIN_MS + 5_000,
    );
    await must(['close', 'r']);
    expect(await must(['key', 'list', img])).toMatch(/ref:fleet \(key \S+, version 2\)/);
    // it opens under version 2; another image bound now finds version 2
    await must(['open', img, 'r']);
    await must(['close', 'r']);
    const other = await imageWithRecovery();
    expect(await must(['key', 'use', other.img, '--kek', 'kmip:fleet'])).toMatch(
      /using KMIP key \S+ \(version 2\) of ref:fleet/,
    );
  }, 120_000);
});

// Key manager end to end: platform keys by default, customer keys (key file, SoftHSM2), rotation,
// revocation that locks open volumes, recovery keys with cryptsetup, bad input (run as root).
import { getFips, randomBytes } from 'node:crypto';
import { chmod, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { makeAtrestEnv, must, run, type AtrestEnv, encryptionOf } from './helpers/cli.js';
import type { EncryptionStatus } from '../src/daemon/protocol.js';
import { decryptSector, dumpVolumeKey } from './helpers/cryptsetup.js';
import { expectOneLineError, readDisk, sha256File, writeDisk } from './helpers/disk.js';
import { createSoftHsm, USER_PIN, type SoftHsm } from './helpers/softhsm.js';

const CHECK_INTERVAL_S = 1;
let t: AtrestEnv;
let hsm: SoftHsm;

beforeAll(() => {
  hsm = createSoftHsm();
  hsm.generateAesKey('kek-1');
});
afterAll(() => {
  hsm.cleanup();
});
beforeEach(async () => {
  t = await makeAtrestEnv('atrest-keys-');
  t.env.ATREST_KEY_CHECK_INTERVAL = String(CHECK_INTERVAL_S);
  t.env.SOFTHSM2_CONF = join(hsm.dir, 'softhsm2.conf');
});
afterEach(async () => {
  await t.cleanup();
});

const encryption = (name: string): Promise<EncryptionStatus> => encryptionOf(t, name);

/** Writes the private providers.json (ATREST_PROVIDERS of the test environment). */
async function providers(entries: Record<string, Record<string, string>>): Promise<void> {
  await writeFile(join(t.dir, 'providers.json'), JSON.stringify({ providers: entries }), { mode: 0o644 });
}

/** Polls `fn` every 100 ms until it returns true; returns the elapsed ms, or throws after timeoutMs. */
async function waitFor(fn: () => Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  while (!(await fn())) {
    if (Date.now() - start > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now() - start;
}

/** Decrypts [pos, pos+length) of the data segment with a volume key (4 KiB sectors, plain64). */
async function decryptData(image: string, volumeKey: Buffer, pos: number, length: number): Promise<Buffer> {
  const fh = await open(image, 'r');
  try {
    const out = Buffer.alloc(length);
    for (let o = 0; o < length; o += 4096) {
      const ct = Buffer.alloc(4096);
      await fh.read(ct, 0, 4096, 16 * 1024 * 1024 + pos + o);
      decryptSector(volumeKey, ct, (pos + o) / 512).copy(out, o);
    }
    return out;
  } finally {
    await fh.close();
  }
}

describe('platform-managed keys (the default)', () => {
  it('formats and opens without a key file; a recovery key opens it with cryptsetup; list, remove, audit', async () => {
    const img = join(t.dir, 'p.img');
    let r = await t.atrest(['format', img, '--size', '16M']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/bound to platform key \(version 1\)/);
    const store = join(t.dir, 'keys');
    expect((await stat(store)).mode & 0o777).toBe(0o700);
    expect((await stat(join(store, 'platform-kek.v1'))).mode & 0o777).toBe(0o600);

    r = await t.atrest(['open', img, 'p']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const data = randomBytes(64 * 1024);
    await writeDisk(disk, 0, data);
    const enc = await encryption('p');
    expect(enc).toMatchObject({
      enabled: true,
      cipher: 'aes-xts-plain64',
      keySource: 'platform',
      kek: 'platform:',
      kekVersion: 1,
      locked: false,
    });
    r = await t.atrest(['status', 'p']);
    expect(r.stdout).toMatch(/key source\s+platform/);
    expect((await t.atrest(['close', 'p'])).code).toBe(0);

    r = await t.atrest(['key', 'add-recovery', img, '--iter-time', '100']);
    expect(r.code, r.stderr).toBe(0);
    const recovery = r.stdout.trim();
    expect(recovery).toMatch(/^([0-9a-z]{5}-){7}[0-9a-z]{5}$/);
    const recFile = join(t.dir, 'recovery');
    await writeFile(recFile, recovery, { mode: 0o600 });
    // cryptsetup opens our volume with the recovery key and ignores our tokens
    await must('cryptsetup', ['open', '--test-passphrase', '--key-file', recFile, img]);
    const vk = await dumpVolumeKey(t.dir, img, recFile);
    expect((await decryptData(img, vk, 0, data.length)).equals(data)).toBe(true);
    vk.fill(0);

    r = await t.atrest(['key', 'list', img, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const slots = (JSON.parse(r.stdout) as { keyslots: Array<{ slot: number; kind: string; kek?: string }> })
      .keyslots;
    expect(slots.map((s) => [s.slot, s.kind, s.kek])).toEqual([
      [0, 'platform', 'platform:'],
      [1, 'recovery', undefined],
    ]);
    expect((await t.atrest(['key', 'remove', img, '0'])).code).toBe(0);
    expectOneLineError(await t.atrest(['key', 'remove', img, '1']), 2, /last one that can unlock/);
    expectOneLineError(await t.atrest(['open', img, 'p2']), 6, /not bound to a platform or customer key/);
    r = await t.atrest(['open', img, 'p2', '--key-file', recFile]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readDisk(r.stdout.trim(), 0, data.length)).equals(data)).toBe(true);
    expect((await t.atrest(['close', 'p2'])).code).toBe(0);

    const audit = await readFile(join(t.dir, 'audit.log'), 'utf8');
    const events = audit
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; audit: boolean });
    expect(events.every((e) => e.audit)).toBe(true);
    expect(new Set(events.map((e) => e.event))).toEqual(
      new Set(['wrap', 'unlock', 'add-recovery', 'remove-keyslot', 'unlock-failed']),
    );
    expect(audit).not.toContain(recovery);
    expect(audit).not.toContain(recovery.slice(0, 11));
  });

  it('rotate-platform: an open volume is re-wrapped by the daemon, a closed one by key rotate; old versions are kept', async () => {
    const a = join(t.dir, 'a.img');
    const b = join(t.dir, 'b.img');
    expect((await t.atrest(['format', a, '--size', '8M'])).code).toBe(0);
    expect((await t.atrest(['format', b, '--size', '8M'])).code).toBe(0);
    const head = async (p: string): Promise<Buffer> => (await readFile(p)).subarray(0x8000, 0x8000 + 258048);
    const slotBefore = await head(a);
    expect((await t.atrest(['open', a, 'a'])).code).toBe(0);
    const r = await t.atrest(['key', 'rotate-platform']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/platform KEK version 2 created/);
    await waitFor(async () => (await encryption('a')).kekVersion === 2, 10_000, 'automatic re-wrap');
    expect(await readdir(join(t.dir, 'keys'))).toContain('platform-kek.v1'); // b still uses v1
    const rb = await t.atrest(['key', 'rotate', b]);
    expect(rb.code, rb.stderr).toBe(0);
    expect(rb.stdout).toMatch(/version 1 -> 2/);
    // nothing deletes a version on its own; the explicit command does once no volume needs it
    expect((await readdir(join(t.dir, 'keys'))).filter((n) => n.startsWith('platform-kek')).sort()).toEqual([
      'platform-kek.v1',
      'platform-kek.v2',
    ]);
    const del = await t.atrest(['key', 'delete-platform-version', '1']);
    expect(del.code, del.stderr).toBe(0);
    expect((await readdir(join(t.dir, 'keys'))).filter((n) => n.startsWith('platform-kek'))).toEqual([
      'platform-kek.v2',
    ]);
    expect((await head(a)).equals(slotBefore)).toBe(true); // re-wrap never touches the keyslot
    expect((await t.atrest(['close', 'a'])).code).toBe(0);
    expect((await t.atrest(['open', b, 'b'])).code).toBe(0);
    expect((await t.atrest(['close', 'b'])).code).toBe(0);
  });

  it('refuses a key store others can read, in one line, without creating the image', async () => {
    const store = join(t.dir, 'keys');
    expect((await t.atrest(['format', join(t.dir, 'ok.img'), '--size', '8M'])).code).toBe(0);
    await chmod(store, 0o755);
    const img = join(t.dir, 'c.img');
    expectOneLineError(await t.atrest(['format', img, '--size', '8M']), 2, /mode 755 lets group or others/);
    await expect(stat(img)).rejects.toMatchObject({ code: 'ENOENT' });
    const other = join(t.dir, 'store2');
    const r = await t.atrest(['--key-store', other, 'format', img, '--size', '8M']);
    expect(r.code, r.stderr).toBe(0);
    expect(await readdir(other)).toContain('platform-kek.v1');
  });
});

describe('customer-managed key in a key file', () => {
  it('key use moves an open volume to it; revoke locks the volume within the interval; restore brings it back', async () => {
    const img = join(t.dir, 'c.img');
    const kek = join(t.dir, 'kek');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    await providers({ 'kek-a': { type: 'file', path: kek } });
    expect((await t.atrest(['format', img, '--size', '16M'])).code).toBe(0);
    let r = await t.atrest(['open', img, 'c']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    const data = randomBytes(256 * 1024);
    await writeDisk(disk, 4096, data);

    r = await t.atrest(['key', 'use', img, '--kek', 'kek-a']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/removed key slot 0/);
    r = await t.atrest(['key', 'list', img, '--json']);
    const kinds = (JSON.parse(r.stdout) as { keyslots: Array<{ kind: string }> }).keyslots.map((s) => s.kind);
    expect(kinds).toEqual(['customer']);
    await waitFor(async () => (await encryption('c')).keySource === 'customer', 10_000, 'customer key');

    const revokedAt = Date.now();
    expect((await t.atrest(['key', 'revoke', '--kek', 'kek-a'])).code).toBe(0);
    await waitFor(async () => (await encryption('c')).locked, 10_000, 'lock');
    const enc = await encryption('c');
    expect(enc.lockedReason).toMatch(/key revoked or unavailable: ref:kek-a/);
    expect(Date.parse(enc.lockedAt ?? '') - revokedAt).toBeLessThan(10_000);
    const locked = await sha256File(img);
    await expect(readDisk(disk, 4096, 4096)).rejects.toMatchObject({ code: 'EIO' });
    await expect(writeDisk(disk, 0, randomBytes(4096))).rejects.toMatchObject({ code: 'EIO' });
    expect(await sha256File(img)).toBe(locked);
    expect((await t.atrest(['close', 'c'])).code).toBe(0);
    expect(await sha256File(img)).toBe(locked);

    expectOneLineError(await t.atrest(['open', img, 'c']), 6, /key revoked or unavailable/);
    expect((await t.atrest(['key', 'restore', '--kek', 'kek-a'])).code).toBe(0);
    r = await t.atrest(['open', img, 'c']);
    expect(r.code, r.stderr).toBe(0);
    expect((await readDisk(disk, 4096, data.length)).equals(data)).toBe(true);
    expect((await t.atrest(['close', 'c'])).code).toBe(0);
  });
});

describe('customer-managed key in a PKCS#11 HSM (SoftHSM2)', () => {
  it('revoking the key while fio writes fails the writes within the interval; ciphertext unchanged; restore reads back', async () => {
    const pinFile = join(t.dir, 'pin');
    await writeFile(pinFile, USER_PIN, { mode: 0o600 });
    await providers({
      hsm1: { type: 'pkcs11', module: hsm.modulePath, token: 'atrest', object: 'kek-1', pinSource: pinFile },
    });
    const img = join(t.dir, 'h.img');
    let r = await t.atrest(['format', img, '--size', '32M', '--kek', 'hsm1']);
    expect(r.code, r.stderr).toBe(0);
    r = await t.atrest(['key', 'list', img, '--json']);
    expect(r.stdout).toContain('"kind": "customer"');
    expect(r.stdout).toContain('"kek": "ref:hsm1"');
    expect(r.stdout).not.toContain(USER_PIN);
    expect(r.stdout).not.toContain(hsm.modulePath);
    r = await t.atrest(['open', img, 'h']);
    expect(r.code, r.stderr).toBe(0);
    const disk = r.stdout.trim();
    expect(await encryption('h')).toMatchObject({ keySource: 'customer', kekVersion: 1, locked: false });
    const before = randomBytes(1024 * 1024);
    await writeDisk(disk, 0, before);

    // fio writes to the second half until the volume locks under it
    const fio = run(
      'fio',
      [
        '--name=revoke',
        `--filename=${disk}`,
        '--ioengine=libaio',
        '--direct=1',
        '--iodepth=4',
        '--rw=randwrite',
        '--bs=64k',
        '--offset=16M',
        '--size=16M',
        '--time_based',
        '--runtime=60',
      ],
      { timeoutMs: 90_000 },
    );
    await new Promise((res) => setTimeout(res, 1500));
    const revokedAt = Date.now();
    hsm.setFlags('kek-1', { decrypt: false });
    const f = await fio;
    const failedAfter = Date.now() - revokedAt;
    expect(f.code).not.toBe(0);
    expect(f.stderr + f.stdout).toMatch(/Input\/output error/);
    expect(failedAfter).toBeLessThan(10_000);
    const enc = await encryption('h');
    expect(enc.locked).toBe(true);
    expect(enc.lockedReason).toMatch(/key revoked or unavailable: ref:hsm1 version 1/);
    expect(enc.lockedReason).not.toContain(USER_PIN);
    const locked = await sha256File(img);
    await new Promise((res) => setTimeout(res, 1500));
    expect(await sha256File(img)).toBe(locked);
    expect((await t.atrest(['close', 'h'])).code).toBe(0);
    expect(await sha256File(img)).toBe(locked);
    expectOneLineError(await t.atrest(['open', img, 'h']), 6, /key revoked or unavailable/);

    hsm.setFlags('kek-1', { decrypt: true });
    r = await t.atrest(['open', img, 'h']);
    expect(r.code, r.stderr).toBe(0);
    expect((await readDisk(disk, 0, before.length)).equals(before)).toBe(true);
    expect((await t.atrest(['close', 'h'])).code).toBe(0);
    const audit = await readFile(join(t.dir, 'audit.log'), 'utf8');
    expect(audit).toMatch(/"event":"lock"/);
    expect(audit).not.toContain(`pin-value`);
  });

  it('bad input: unknown scheme or provider, unreachable module, wrong PIN, short KEK, mismatched token', async () => {
    const img = join(t.dir, 'b.img');
    expect((await t.atrest(['format', img, '--size', '8M'])).code).toBe(0);
    const orig = await sha256File(img);
    const wrongPin = join(t.dir, 'wrong-pin');
    await writeFile(wrongPin, '9999', { mode: 0o600 });
    const short = join(t.dir, 'short');
    await writeFile(short, randomBytes(16), { mode: 0o600 });
    await providers({
      nomod: { type: 'pkcs11', module: '/nonexistent/libnope.so', token: 'atrest', object: 'kek-1' },
      wrongpin: {
        type: 'pkcs11',
        module: hsm.modulePath,
        token: 'atrest',
        object: 'kek-1',
        pinSource: wrongPin,
      },
      short: { type: 'file', path: short },
    });
    const use = (kek: string): ReturnType<AtrestEnv['atrest']> => t.atrest(['key', 'use', img, '--kek', kek]);
    expectOneLineError(await use('vault:secret/kek'), 2, /unknown key provider scheme vault/);
    expectOneLineError(await use('hsm9'), 6, /key provider "hsm9" is not configured in .*providers\.json/);
    expectOneLineError(
      await use(`pkcs11:token=atrest;object=kek-1?module-path=/tmp/other.so&pin-value=${USER_PIN}`),
      6,
      /matches no provider/,
    );
    expectOneLineError(await use('nomod'), 6, /libnope\.so/);
    const wrong = await use('wrongpin');
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrong.stderr).toMatch(/PIN/i);
    expectOneLineError(await use('short'), 2, /KEK too short/);
    expect(await sha256File(img)).toBe(orig);

    // a token copied from another volume does not match this volume's keyslot
    const other = join(t.dir, 'o.img');
    expect((await t.atrest(['format', other, '--size', '8M'])).code).toBe(0);
    const token = JSON.parse(
      (await must('cryptsetup', ['token', 'export', '--token-id', '0', other])).stdout,
    ) as Record<string, unknown>;
    await must('cryptsetup', ['token', 'remove', '--token-id', '0', img]);
    await must('cryptsetup', ['token', 'import', '--token-id', '0', '--json-file', '-', img], {
      input: JSON.stringify({ ...token, keyslots: ['0'] }),
    });
    expectOneLineError(
      await t.atrest(['open', img, 'mm']),
      6,
      /token 0 \(atrest-platform\) does not match its key slot 0/,
    );
  });
});

describe('FIPS mode', () => {
  it.skipIf(getFips() === 1)(
    '--fips refuses without a FIPS provider and says how to enable one',
    async () => {
      const r = await t.atrest(['--fips', 'format', join(t.dir, 'f.img'), '--size', '8M']);
      expectOneLineError(r, 3, /FIPS mode requested, but Node's OpenSSL is not running a FIPS provider/);
      expect(r.stderr).toMatch(/openssl fipsinstall/);
      await expect(stat(join(t.dir, 'f.img'))).rejects.toMatchObject({ code: 'ENOENT' });
    },
  );
});

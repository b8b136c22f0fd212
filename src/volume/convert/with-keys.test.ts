// Conversion with keys (with-keys.ts) through a real KeyManager as keys/conversion-keyring.ts gives it: start, resume, reencrypt.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConversionKeyringAdapter, KeyManager, listKeyslots, type KeyEvent } from '../../keys/index.js';
import { addKeyslot, readLuks2, unlockVolumeKey } from '../../luks2/index.js';
import { useTempDir } from '../../test-helpers/temp-dir.test-helper.js';
import { openConversion, startReencrypt } from './with-keys.js';
import { rejects } from '../../errors/rejects.test-helper.js';

const FAST = { type: 'pbkdf2', iterations: 1000 } as const;
const dir = useTempDir('atrest-with-keys-', { perTest: true });
let events: KeyEvent[];
let km: KeyManager;
let keyring: ConversionKeyringAdapter;

beforeEach(() => {
  events = [];
  km = new KeyManager({
    keyStoreDir: join(dir(), 'store'),
    providersFile: join(dir(), 'providers.json'),
    audit: (e) => events.push(e),
  });
  keyring = new ConversionKeyringAdapter(km);
});
afterEach(() => km.close());

describe('openConversion', () => {
  it('starts encrypting a plaintext image under a platform-bound keyslot, then resumes it with the same key', async () => {
    const image = join(dir(), 'plain.img');
    await writeFile(image, Buffer.alloc(1 << 20, 'a plaintext file system '));
    const conv = await openConversion(image, { start: true, batch: 64 * 1024, keys: { keyring } });
    expect(conv).not.toBeNull();
    if (conv === null) return;
    expect(conv.started).toBe(true);
    expect(conv.plan.mode).toBe('encrypt');
    expect(conv.oldKey).toBeNull();
    expect(conv.unlocked.binding?.type).toBe('atrest-platform');
    expect(listKeyslots(conv.meta).map((e) => e.kind)).toEqual(['platform']);
    expect(events.map((e) => e.event)).toContain('wrap');
    const again = await openConversion(image, { start: true, keys: { keyring } });
    expect(again?.started).toBe(false);
    expect(again?.header).toBe(conv.header);
    expect(again?.unlocked.volumeKey.equals(conv.unlocked.volumeKey)).toBe(true);
    conv.unlocked.volumeKey.fill(0);
    again?.unlocked.volumeKey.fill(0);
  });

  it('refuses a key file with --kek, and (open) an all-random image, leaving it plaintext', async () => {
    const image = join(dir(), 'random.img');
    await writeFile(image, randomBytes(1 << 20));
    const both = { keyring, passphrase: Buffer.from('key file'), kek: 'ref:hsm' };
    await expect(openConversion(image, { start: true, keys: both })).rejects.toMatchObject({
      code: 'USAGE',
      message: 'give either --key-file or --kek, not both',
    });
    await rejects(
      openConversion(image, { start: true, refuseRandom: true, keys: { keyring } }),
      'NOT_LUKS2',
      /looks like random data/,
    );
    expect(await openConversion(image, { start: false, keys: { keyring } })).toBeNull();
  });
});

describe('startReencrypt', () => {
  it(
    'moves platform, recovery and passphrase keyslots to a new key by the same methods',
    { timeout: 120_000 },
    async () => {
      const image = join(dir(), 'vol.img');
      await km.format({ imagePath: image, dataSize: 1 << 20 });
      const { passphrase: oldRecovery } = await km.addRecovery(await readLuks2(image), {}, FAST);
      const pass = Buffer.from('the passphrase of keyslot 2');
      const old = await km.unlock(await readLuks2(image));
      await addKeyslot(await readLuks2(image), old.volumeKey, pass, { kdf: FAST });
      const before = await readLuks2(image);
      expect(listKeyslots(before).map((e) => e.kind)).toEqual(['platform', 'recovery', 'passphrase']);

      // a passphrase keyslot without its key file: refused, header unchanged, nothing audited
      await rejects(
        startReencrypt(image, { keys: { keyring, keyFiles: [] } }),
        'USAGE',
        /key slot 2 of .* \(passphrase\) needs its passphrase/,
      );
      expect((await readLuks2(image)).seqid).toBe(before.seqid);
      expect(events.map((e) => e.event)).not.toContain('rotate');

      const { recovery } = await startReencrypt(image, {
        keys: { keyring, keyFiles: [pass], iterTimeMs: 10 },
      });
      expect(recovery).toHaveLength(1);
      const after = await readLuks2(image);
      expect(after.converting).toBe(true);
      expect(
        listKeyslots(after)
          .map((e) => e.kind)
          .sort(),
      ).toEqual(['passphrase', 'platform', 'recovery']);
      const bound = listKeyslots(after).find((e) => e.kind === 'platform');
      expect(after.tokens.find((t) => t.id === bound?.token)?.raw.atrest_kek).toBe('platform:');
      const fresh = recovery[0]?.passphrase ?? Buffer.alloc(0);
      const byRecovery = await unlockVolumeKey(after, fresh);
      const byPass = await unlockVolumeKey(after, pass);
      expect(byRecovery.volumeKey.equals(byPass.volumeKey)).toBe(true);
      expect(byRecovery.volumeKey.equals(old.volumeKey)).toBe(false);
      await expect(unlockVolumeKey(after, oldRecovery)).rejects.toMatchObject({ code: 'WRONG_KEY' });
      expect(events.filter((e) => e.event === 'rotate')).toEqual([
        { event: 'rotate', volume: image, uuid: before.uuid, reason: 'reencrypt: new volume key' },
      ]);

      const conv = await openConversion(image, { start: false, keys: { keyring, keyFiles: [pass] } });
      expect(conv?.plan.mode).toBe('reencrypt');
      expect(conv?.unlocked.binding?.type).toBe('atrest-platform');
      expect(conv?.unlocked.volumeKey.equals(byPass.volumeKey)).toBe(true);
      expect(conv?.oldKey?.equals(old.volumeKey)).toBe(true);
      for (const k of [
        old.volumeKey,
        byRecovery.volumeKey,
        byPass.volumeKey,
        conv?.unlocked.volumeKey,
        conv?.oldKey,
      ])
        k?.fill(0);
      fresh.fill(0);
      oldRecovery.fill(0);
    },
  );

  it('rebinds a customer keyslot under the same KEK, its token keeping the stored name', async () => {
    const kek = join(dir(), 'kek');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    const providers = { providers: { 'kek-a': { type: 'file', path: kek } } };
    await writeFile(join(dir(), 'providers.json'), JSON.stringify(providers), { mode: 0o644 });
    const image = join(dir(), 'cmk.img');
    await writeFile(image, Buffer.alloc(1 << 20, 'customer data '));
    const conv = await openConversion(image, { start: true, keys: { keyring, kek: 'kek-a' } });
    expect(conv?.unlocked.binding?.kek).toBe('ref:kek-a');
    conv?.unlocked.volumeKey.fill(0);
    // not finished: a volume still being encrypted cannot be re-encrypted
    await rejects(
      startReencrypt(image, { header: conv?.header ?? '', keys: { keyring, keyFiles: [] } }),
      'REENCRYPT_IN_PROGRESS',
      /already/,
    );

    const vol = join(dir(), 'cmk-vol.img');
    await km.format({ imagePath: vol, dataSize: 1 << 20 }, 'kek-a');
    const { recovery } = await startReencrypt(vol, { keys: { keyring, keyFiles: [] } });
    expect(recovery).toEqual([]);
    const after = await readLuks2(vol);
    expect(listKeyslots(after).map((e) => [e.kind, e.kek])).toEqual([['customer', 'ref:kek-a']]);
    expect(after.tokens.filter((t) => t.type === 'atrest-cmk').map((t) => t.raw.atrest_kek)).toEqual([
      'ref:kek-a',
    ]);
    const re = await openConversion(vol, { start: false, keys: { keyring } });
    expect(re?.plan.mode).toBe('reencrypt');
    expect(re?.unlocked.binding?.type).toBe('atrest-cmk');
    re?.unlocked.volumeKey.fill(0);
    re?.oldKey?.fill(0);
  });
});

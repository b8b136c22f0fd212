// Pins the exact audit entries (fields, values and their order in the log line) of every KeyManager operation.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { formatLuks2, readLuks2 } from '../luks2/index.js';
import type { KeyEvent } from './audit.js';
import { FileKekProvider } from './file-provider.js';
import { KeyManager } from './manager.js';
import { bindings } from './tokens.js';

const dir = useTempDir('atrest-km-audit-');
let events: KeyEvent[];
let km: KeyManager;
const FAST = { type: 'pbkdf2', iterations: 1000 } as const;

beforeEach(() => {
  events = [];
  km = new KeyManager({
    keyStoreDir: join(dir(), 'store'),
    providersFile: join(dir(), 'providers.json'),
    audit: (e) => events.push(e),
  });
  return () => km.close();
});

/** The log line's content: JSON.stringify keeps key order, so the order is pinned too. */
function lines(): string[] {
  return events.splice(0).map((e) => JSON.stringify(e));
}
const line = (e: Record<string, unknown>): string => JSON.stringify(e);

describe('KeyManager audit entries', () => {
  it('format, unlock, add-recovery, rotate-platform, rewrap, use-kek, remove-keyslot', async () => {
    const volume = join(dir(), 'a.img');
    const { uuid } = await km.format({ imagePath: volume, dataSize: 1 << 20 });
    let meta = await readLuks2(volume);
    const keyId = bindings(meta)[0]?.keyId;
    expect(lines()).toEqual([
      line({ event: 'wrap', volume, uuid, slot: 0, provider: 'platform:', keyId, kekVersion: 1 }),
    ]);

    (await km.unlock(meta)).volumeKey.fill(0);
    expect(lines()).toEqual([
      line({ event: 'unlock', volume, uuid, slot: 0, provider: 'platform:', keyId, kekVersion: 1 }),
    ]);

    const { keyslot: rec, passphrase } = await km.addRecovery(meta, {}, FAST);
    const unlockV1 = line({
      event: 'unlock',
      volume,
      uuid,
      slot: 0,
      provider: 'platform:',
      keyId,
      kekVersion: 1,
    });
    expect(lines()).toEqual([unlockV1, line({ event: 'add-recovery', volume, uuid, slot: rec })]);
    meta = await readLuks2(volume);
    (await km.unlock(meta, { passphrase })).volumeKey.fill(0);
    expect(lines()).toEqual([line({ event: 'unlock', volume, uuid, slot: rec, provider: 'passphrase' })]);
    passphrase.fill(0);
    await expect(km.unlock(meta, { passphrase: Buffer.from('wrong') })).rejects.toMatchObject({
      code: 'WRONG_KEY',
    });
    expect(lines()).toEqual([
      line({ event: 'unlock-failed', volume, uuid, provider: 'passphrase', code: 'WRONG_KEY' }),
    ]);

    await km.rotatePlatform();
    expect(lines()).toEqual([
      line({ event: 'rotate-platform', provider: 'platform:', keyId, kekVersion: 2 }),
    ]);

    const b = bindings(meta)[0];
    if (b === undefined) throw new Error('no binding');
    expect(await km.rewrap(meta, b)).toMatchObject({ from: 1, to: 2 });
    expect(lines()).toEqual([
      line({
        event: 'rotate',
        volume,
        uuid,
        slot: 0,
        provider: 'platform:',
        keyId,
        kekVersion: 2,
        fromVersion: 1,
      }),
    ]);

    const kek = join(dir(), 'kek');
    await writeFile(kek, randomBytes(32), { mode: 0o600 });
    await writeFile(
      join(dir(), 'providers.json'),
      JSON.stringify({ providers: { cmk: { type: 'file', path: kek } } }),
      { mode: 0o644 },
    );
    meta = await readLuks2(volume);
    const moved = await km.useKek(meta, 'cmk');
    const slot = moved.keyslot;
    const cmkId = moved.ref.keyId;
    const unlockV2 = line({
      event: 'unlock',
      volume,
      uuid,
      slot: 0,
      provider: 'platform:',
      keyId,
      kekVersion: 2,
    });
    const cmk = { provider: 'ref:cmk', keyId: cmkId, kekVersion: 1 };
    expect(lines()).toEqual([
      unlockV2,
      line({ event: 'wrap', volume, uuid, slot, ...cmk }),
      line({ event: 'unlock', volume, uuid, slot, ...cmk }),
      line({ event: 'remove-keyslot', volume, uuid, slot: 0, provider: 'platform:', kekVersion: 2 }),
      line({ event: 'use-kek', volume, uuid, slot, provider: 'ref:cmk', kekVersion: 1 }),
    ]);

    meta = await readLuks2(volume);
    await new FileKekProvider().revoke(`file:${kek}`);
    await expect(km.unlock(meta)).rejects.toMatchObject({ code: 'KEY_UNAVAILABLE' });
    expect(lines()).toEqual([
      line({ event: 'unlock-failed', volume, uuid, slot, ...cmk, code: 'KEY_UNAVAILABLE' }),
    ]);
    await new FileKekProvider().restore(`file:${kek}`);

    // a bound keyslot names its KEK; a recovery keyslot has none
    await km.removeSlot(meta, slot);
    expect(lines()).toEqual([
      line({ event: 'remove-keyslot', volume, uuid, slot, provider: 'ref:cmk', kekVersion: 1 }),
    ]);
  });

  it('remove-keyslot of a recovery keyslot, and unlock-failed on a volume without a key token', async () => {
    const volume = join(dir(), 'b.img');
    const { uuid } = await km.format({ imagePath: volume, dataSize: 1 << 20 });
    const { keyslot, passphrase } = await km.addRecovery(await readLuks2(volume), {}, FAST);
    passphrase.fill(0);
    lines();
    await km.removeSlot(await readLuks2(volume), keyslot);
    expect(lines()).toEqual([line({ event: 'remove-keyslot', volume, uuid, slot: keyslot })]);

    const plain = join(dir(), 'c.img');
    const r = await formatLuks2({
      imagePath: plain,
      dataSize: 1 << 20,
      passphrase: Buffer.from('pw'),
      kdf: FAST,
    });
    await expect(km.unlock(await readLuks2(plain))).rejects.toMatchObject({ code: 'WRONG_KEY' });
    expect(lines()).toEqual([
      line({
        event: 'unlock-failed',
        volume: plain,
        uuid: r.uuid,
        code: 'WRONG_KEY',
        reason: 'no key token',
      }),
    ]);
  });
});

// Revocation always locks (issue 10 item 3): the exact sequence in one daemon, and a volume reopened after a lock (run as root).
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { atrestOk, makeAtrestEnv, type AtrestEnv, encryptionOf } from './helpers/cli.js';
import type { EncryptionStatus } from '../src/daemon/protocol.js';
import { ddBlock, sha256File, writeDisk } from './helpers/disk.js';

/** Short check interval; locking is asserted within LOCK_WITHIN_MS of the revocation (generous margin). */
const CHECK_INTERVAL_S = 1;
const LOCK_WITHIN_MS = 10_000;
let t: AtrestEnv;

beforeEach(async () => {
  t = await makeAtrestEnv('atrest-revoke-');
  t.env.ATREST_KEY_CHECK_INTERVAL = String(CHECK_INTERVAL_S);
});
afterEach(async () => {
  await t.cleanup();
});

/**
 * A customer KEK the volume can be moved to with `key use IMAGE --kek ARG`: returns that argument
 * and the file whose disappearance revokes it. (The one place to adapt when KEKs become configured
 * provider references.)
 */
async function customerKek(name: string): Promise<{ arg: string; file: string }> {
  const file = join(t.dir, name);
  await writeFile(file, randomBytes(32), { mode: 0o600 });
  // a file provider configured by name in the private providers.json (ATREST_PROVIDERS of the test env)
  await writeFile(
    join(t.dir, 'providers.json'),
    JSON.stringify({ providers: { [name]: { type: 'file', path: file } } }),
    {
      mode: 0o644,
    },
  );
  return { arg: name, file };
}

const encryption = (name: string): Promise<EncryptionStatus> => encryptionOf(t, name);

const must = (args: string[]): Promise<string> => atrestOk(t, args);

/**
 * Moves the KEK file away and writes 4 KiB once a second: within LOCK_WITHIN_MS status says locked
 * and every write fails with EIO; nothing more reaches the image. Returns how to put the KEK back.
 */
async function revokeWhileWriting(
  name: string,
  disk: string,
  image: string,
  kekFile: string,
): Promise<() => Promise<void>> {
  await rename(kekFile, `${kekFile}.away`);
  const revokedAt = Date.now();
  let failedAt: number | null = null;
  let enc = await encryption(name);
  for (let block = 0; Date.now() - revokedAt < LOCK_WITHIN_MS + 5_000; block++) {
    const w = await ddBlock(disk, block % 64);
    if (!w.ok) {
      expect(w.eio, 'a failed write fails with EIO').toBe(true);
      failedAt ??= Date.now();
    } else {
      expect(failedAt, 'no write succeeds after one has failed').toBeNull();
    }
    enc = await encryption(name);
    if (enc.locked && failedAt !== null) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  expect(enc.locked, 'status says locked').toBe(true);
  expect(enc.lockedReason).toMatch(/key revoked or unavailable: (file:|ref:)/);
  expect(Date.parse(enc.lockedAt ?? '') - revokedAt).toBeLessThan(LOCK_WITHIN_MS);
  expect(failedAt, 'writes fail').not.toBeNull();
  expect((failedAt ?? Infinity) - revokedAt).toBeLessThan(LOCK_WITHIN_MS + 2_000);
  const locked = await sha256File(image);
  for (let i = 0; i < 3; i++) expect(await ddBlock(disk, i)).toEqual({ ok: false, eio: true });
  expect(await sha256File(image)).toBe(locked);
  return () => rename(`${kekFile}.away`, kekFile);
}

describe('revocation always locks', () => {
  it('the issue sequence: platform key, close, key use a file KEK, reopen, move it away: locks; and again after reopening', async () => {
    const img = join(t.dir, 'r.img');
    const kek = await customerKek('kek');
    await must(['format', img, '--size', '16M']);
    let disk = await must(['open', img, 'r']);
    await writeDisk(disk, 0, randomBytes(64 * 1024));
    await must(['close', 'r']);
    // the daemon runs KEK checks with no volume open now (the pass that used to wedge the check)
    await new Promise((r) => setTimeout(r, 3 * CHECK_INTERVAL_S * 1000));
    await must(['key', 'use', img, '--kek', kek.arg]);
    disk = await must(['open', img, 'r']);
    expect(await encryption('r')).toMatchObject({ keySource: 'customer', locked: false });
    expect(await ddBlock(disk, 1)).toEqual({ ok: true, eio: false });

    const restore = await revokeWhileWriting('r', disk, img, kek.file);

    // a volume reopened after an earlier lock locks again
    await must(['close', 'r']);
    await restore();
    await new Promise((r) => setTimeout(r, 3 * CHECK_INTERVAL_S * 1000));
    disk = await must(['open', img, 'r']);
    expect(await encryption('r')).toMatchObject({ keySource: 'customer', locked: false });
    expect(await ddBlock(disk, 2)).toEqual({ ok: true, eio: false });
    await revokeWhileWriting('r', disk, img, kek.file);
    await must(['close', 'r']);
  });
});

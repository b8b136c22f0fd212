// Pkcs11Provider against a real SoftHSM2 token initialised by the test itself.
import { chmod, copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AtrestError } from '../src/errors/index.js';
import { KeyManager } from '../src/keys/manager.js';
import { Pkcs11Provider } from '../src/keys/pkcs11.js';
import { parseProviders } from '../src/keys/provider-config.js';
import { readLuks2, type JsonObject } from '../src/luks2/index.js';
import { writeMetadata } from '../src/luks2/volume.js';
import { createSoftHsm, SOFTHSM_MODULE, type SoftHsm } from './helpers/softhsm.js';
import { useTempDir } from '../src/test-helpers/temp-dir.test-helper.js';

const URI = `pkcs11:token=atrest;object=kek-1?module-path=${SOFTHSM_MODULE}&pin-value=1234`;

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AtrestError);
    const e = err as AtrestError;
    expect(e.oneLine()).not.toContain('\n');
    expect(e.oneLine()).not.toContain('1234');
    return e.code;
  }
  throw new Error('expected a rejection');
}

describe('Pkcs11Provider with SoftHSM2', () => {
  let hsm: SoftHsm;
  let provider: Pkcs11Provider;
  const secret = Buffer.from('00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef', 'hex');
  const tempDir = useTempDir('atrest-p11-', { perTest: true });

  beforeAll(() => {
    hsm = createSoftHsm();
    hsm.generateAesKey('kek-1');
    provider = new Pkcs11Provider();
  });
  afterAll(() => {
    provider?.close();
    hsm?.cleanup();
  });

  it('wraps and unwraps a 32-byte secret inside the token; the blob hides the secret', async () => {
    const ref = await provider.current(URI);
    expect(ref.version).toBe(1);
    expect(ref.keyId).toBe('atrest/kek-1');
    const blob = await provider.wrap(ref, secret);
    expect(blob.includes(secret)).toBe(false);
    expect(blob.includes(secret.subarray(0, 8))).toBe(false);
    expect(blob.length).toBe(4 + 1 + 12 + 32 + 16);
    const back = await provider.unwrap(ref, blob);
    expect(back.equals(secret)).toBe(true);
    const blob2 = await provider.wrap(ref, secret);
    expect(blob2.equals(blob)).toBe(false); // fresh IV
    expect(await provider.available(ref)).toBe(true);
    // tampering is detected
    const bad = Buffer.from(blob);
    bad[bad.length - 1]! ^= 1;
    expect(await codeOf(provider.unwrap(ref, bad))).toBe('WRONG_KEY');
  });

  it('picks up a second version with current()', async () => {
    const v1 = await provider.current(URI);
    const blob1 = await provider.wrap(v1, secret);
    hsm.generateAesKey('kek-1.v2');
    const v2 = await provider.current(URI);
    expect(v2.version).toBe(2);
    const blob2 = await provider.wrap(v2, secret);
    expect((await provider.unwrap(v2, blob2)).equals(secret)).toBe(true);
    expect((await provider.unwrap(v1, blob1)).equals(secret)).toBe(true);
    // a blob from v1 does not open under v2
    expect(await codeOf(provider.unwrap(v2, blob1))).toBe('WRONG_KEY');
  });

  it('revokes when decrypt/unwrap is disabled and recovers when re-enabled', async () => {
    const ref = { ...(await provider.current(URI)), version: 1 };
    const blob = await provider.wrap(ref, secret);
    hsm.setFlags('kek-1', { unwrap: false });
    expect(await provider.available(ref)).toBe(false);
    expect(await codeOf(provider.unwrap(ref, blob))).toBe('KEY_UNAVAILABLE');
    hsm.setFlags('kek-1', { unwrap: true, decrypt: false });
    expect(await provider.available(ref)).toBe(false);
    expect(await codeOf(provider.unwrap(ref, blob))).toBe('KEY_UNAVAILABLE');
    hsm.setFlags('kek-1', { decrypt: true });
    expect(await provider.available(ref)).toBe(true);
    expect((await provider.unwrap(ref, blob)).equals(secret)).toBe(true);
  });

  it('revokes when the object is destroyed; a new object with the same label is a different key', async () => {
    const ref = { ...(await provider.current(URI)), version: 2 };
    const blob = await provider.wrap(ref, secret);
    hsm.destroy('kek-1.v2');
    expect(await provider.available(ref)).toBe(false);
    expect(await codeOf(provider.unwrap(ref, blob))).toBe('KEY_UNAVAILABLE');
    expect((await provider.current(URI)).version).toBe(1);
    hsm.generateAesKey('kek-1.v2');
    expect(await provider.available(ref)).toBe(true);
    // fresh key material: the old blob cannot be recovered (destroying is final), new wraps work
    expect(await codeOf(provider.unwrap(ref, blob))).toBe('WRONG_KEY');
    const again = await provider.wrap(ref, secret);
    expect((await provider.unwrap(ref, again)).equals(secret)).toBe(true);
  });

  it('wrong PIN gives a one-line error', async () => {
    provider.close(); // login state is per process and token: drop ours first
    provider = new Pkcs11Provider();
    hsm.logout();
    const p = new Pkcs11Provider();
    try {
      const err = await p.current(URI.replace('pin-value=1234', 'pin-value=9999')).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AtrestError);
      expect((err as AtrestError).code).toBe('WRONG_KEY');
      expect((err as AtrestError).message).toBe('PKCS#11 login failed: wrong PIN');
    } finally {
      p.close();
    }
  });

  it('missing module and missing token give one-line errors', async () => {
    const p = new Pkcs11Provider();
    try {
      const err = await p
        .current('pkcs11:token=atrest;object=kek-1?module-path=/nonexistent/libnope.so&pin-value=1234')
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AtrestError);
      expect((err as AtrestError).code).toBe('KEY_UNAVAILABLE');
      expect((err as AtrestError).oneLine()).toContain('/nonexistent/libnope.so');
      expect((err as AtrestError).oneLine()).not.toContain('\n');
      expect(await codeOf(p.current(URI.replace('token=atrest', 'token=nope')))).toBe('KEY_UNAVAILABLE');
      expect(await codeOf(p.current(URI.replace('object=kek-1', 'object=missing')))).toBe('KEY_UNAVAILABLE');
    } finally {
      p.close();
    }
  });

  it('refuses a module that group or others may change, before loading it', async () => {
    const p = new Pkcs11Provider();
    try {
      const copy = join(tempDir(), 'libsofthsm2.so');
      await copyFile(SOFTHSM_MODULE, copy);
      await chmod(copy, 0o666);
      const err = await p.current(URI.replace(SOFTHSM_MODULE, copy)).catch((e: unknown) => e);
      expect(err).toMatchObject({
        code: 'USAGE',
        message: `refusing PKCS#11 module ${copy}: mode 666 lets group or others change it`,
      });
    } finally {
      p.close();
    }
  });

  it('reconnects when its cached session was closed behind its back (token re-inserted)', async () => {
    const ref = await provider.current(URI);
    expect(await provider.available(ref)).toBe(true);
    // sessions belong to the process: this closes the provider's cached session too
    const slot = hsm.pkcs11
      .C_GetSlotList(true)
      .find((s) => hsm.pkcs11.C_GetTokenInfo(s).label.trim() === 'atrest');
    if (slot === undefined) throw new Error('no slot');
    hsm.pkcs11.C_CloseAllSessions(slot);
    expect(await provider.available(ref)).toBe(true);
    const blob = await provider.wrap(ref, secret);
    expect((await provider.unwrap(ref, blob)).equals(secret)).toBe(true);
  });

  it('through the key manager: tokens name ref:hsm1; a legacy full-URI token opens only while it matches', async () => {
    const dir = tempDir();
    const pin = join(dir, 'pin');
    await writeFile(pin, '1234', { mode: 0o600 });
    const table = parseProviders(
      {
        providers: {
          hsm1: { type: 'pkcs11', module: SOFTHSM_MODULE, token: 'atrest', object: 'kek-1', pinSource: pin },
        },
      },
      join(dir, 'providers.json'),
    );
    const km = new KeyManager({ keyStoreDir: join(dir, 'store'), providerTable: table });
    const image = join(dir, 'h.img');
    const setKek = async (value: string): Promise<void> => {
      const meta = await readLuks2(image);
      const raw = structuredClone(meta.json);
      ((raw.tokens as JsonObject)['0'] as JsonObject).atrest_kek = value;
      await writeMetadata(meta, raw);
    };
    try {
      await km.format({ imagePath: image, dataSize: 1 << 20 }, 'hsm1');
      const meta = await readLuks2(image);
      expect(meta.tokens[0]?.raw.atrest_kek).toBe('ref:hsm1');
      expect(JSON.stringify(meta.json)).not.toContain(SOFTHSM_MODULE);
      (await km.unlock(meta)).volumeKey.fill(0);
      // as written before references: the full URI, module and pin-source as configured
      await setKek(`pkcs11:token=atrest;object=kek-1?module-path=${SOFTHSM_MODULE}&pin-source=${pin}`);
      (await km.unlock(await readLuks2(image))).volumeKey.fill(0);
      // the same key with a PIN file, or a module, the configuration does not name: refused
      await setKek(`pkcs11:token=atrest;object=kek-1?module-path=${SOFTHSM_MODULE}&pin-source=${dir}/other`);
      expect(await codeOf(km.unlock(await readLuks2(image)))).toBe('KEK_NOT_CONFIGURED');
      await setKek(`pkcs11:token=atrest;object=kek-1?module-path=${dir}/libsofthsm2.so`);
      expect(await codeOf(km.unlock(await readLuks2(image)))).toBe('KEK_NOT_CONFIGURED');
    } finally {
      km.close();
    }
  });
});

// PKCS#11 wrap and unwrap: a keyslot secret sealed with CKM_AES_GCM inside the token, in atrest's "A11G" blob.
//
// Blob: "A11G" | 0x01 | iv (12) | ciphertext | tag (16). AAD: "atrest-pkcs11-kek:" + key label, so a
// blob made under one version does not decrypt under another label (WRONG_KEY).
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { AtrestError } from '../errors/index.js';
import type { KekRef } from './kek.js';
import {
  CKR_ENCRYPTED_DATA_INVALID,
  CKR_ENCRYPTED_DATA_LEN_RANGE,
  CKR_KEY_FUNCTION_NOT_PERMITTED,
  CKR_KEY_HANDLE_INVALID,
  ckrOf,
} from './pkcs11-errors.js';
import { unavailable, type KeyHandle } from './pkcs11-keys.js';

const MAGIC = Buffer.from('A11G', 'latin1');
const FORMAT = 1;
const IV_LEN = 12;
const TAG_LEN = 16;
const HEADER_LEN = MAGIC.length + 1 + IV_LEN;

/** The IV and ciphertext (with tag) of a blob; WRONG_KEY when it is not one of atrest's. */
export function parseBlob(wrapped: Uint8Array): { iv: Buffer; ct: Buffer } {
  const blob = Buffer.from(wrapped);
  if (
    blob.length < HEADER_LEN + TAG_LEN ||
    !blob.subarray(0, MAGIC.length).equals(MAGIC) ||
    blob[MAGIC.length] !== FORMAT
  ) {
    throw new AtrestError('WRONG_KEY', 'wrapped key is not a PKCS#11 AES-GCM blob from atrest');
  }
  return { iv: blob.subarray(MAGIC.length + 1, HEADER_LEN), ct: blob.subarray(HEADER_LEN) };
}

/** Seals `secret` under the key object `k` (version `ref`) with a fresh random IV: the blob. */
export function sealSecret(k: KeyHandle, ref: KekRef, secret: Uint8Array): Buffer {
  const { pkcs11, session, key, label } = k;
  const iv = randomBytes(IV_LEN);
  const mech = gcm(iv, label);
  const input = Buffer.from(secret);
  const out = Buffer.alloc(input.length + TAG_LEN + 32);
  try {
    pkcs11.C_EncryptInit(session, mech, key);
    const ct = pkcs11.C_Encrypt(session, input, out);
    return Buffer.concat([MAGIC, Buffer.of(FORMAT), iv, ct]);
  } catch (err) {
    const ckr = ckrOf(err);
    if (ckr === CKR_KEY_FUNCTION_NOT_PERMITTED || ckr === CKR_KEY_HANDLE_INVALID)
      throw unavailable(ref, 'encryption is not permitted', err);
    throw new AtrestError('KEY_UNAVAILABLE', `PKCS#11 wrap with ${label} failed`, { cause: err });
  } finally {
    input.fill(0);
    out.fill(0);
  }
}

/** Opens a parsed blob with the key object `k` (version `ref`): the secret (caller wipes). */
export function openSecret(k: KeyHandle, ref: KekRef, blob: { iv: Buffer; ct: Buffer }): Buffer {
  const { pkcs11, session, key, label } = k;
  const out = Buffer.alloc(blob.ct.length);
  try {
    pkcs11.C_DecryptInit(session, gcm(blob.iv, label), key);
    const pt = pkcs11.C_Decrypt(session, blob.ct, out);
    const result = Buffer.from(pt);
    return result;
  } catch (err) {
    const ckr = ckrOf(err);
    if (ckr === CKR_KEY_FUNCTION_NOT_PERMITTED || ckr === CKR_KEY_HANDLE_INVALID)
      throw unavailable(ref, 'decryption is not permitted', err);
    if (ckr === CKR_ENCRYPTED_DATA_INVALID || ckr === CKR_ENCRYPTED_DATA_LEN_RANGE)
      throw new AtrestError('WRONG_KEY', `PKCS#11 KEK ${label} does not unwrap this key`, { cause: err });
    throw new AtrestError('WRONG_KEY', `PKCS#11 unwrap with ${label} failed`, { cause: err });
  } finally {
    out.fill(0);
  }
}

function gcm(iv: Buffer, label: string): pkcs11js.Mechanism {
  const params: pkcs11js.AesGCM = {
    type: pkcs11js.CK_PARAMS_AES_GCM,
    iv,
    aad: Buffer.from(`atrest-pkcs11-kek:${label}`, 'utf8'),
    ivBits: IV_LEN * 8,
    tagBits: TAG_LEN * 8,
  };
  return { mechanism: pkcs11js.CKM_AES_GCM, parameter: params };
}

// Keys: key files, KEK providers (platform store, key files, PKCS#11), and the key manager that binds keyslots to KEKs.
import { open } from 'node:fs/promises';
import { AtrestError, fromSystemError } from '../errors/index.js';

/** cryptsetup's default upper bound for a key file (--keyfile-size default limit): 8 MiB. */
export const MAX_KEY_FILE_BYTES = 8 * 1024 * 1024;

/**
 * Reads a key file whole: its entire content is the passphrase, byte for byte, exactly as
 * `cryptsetup --key-file FILE` reads it (no newline stripping). The caller wipes the returned Buffer.
 */
export async function readKeyFile(path: string): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw fromSystemError(err, path, 'key file');
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new AtrestError('USAGE', `key file ${path} is a directory`, { path });
    if (st.size > MAX_KEY_FILE_BYTES) {
      throw new AtrestError('USAGE', `key file ${path} is larger than ${MAX_KEY_FILE_BYTES} bytes`, {
        path,
        hint: 'use a smaller key file',
      });
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      if (total > MAX_KEY_FILE_BYTES) {
        for (const c of chunks) c.fill(0);
        throw new AtrestError('USAGE', `key file ${path} is larger than ${MAX_KEY_FILE_BYTES} bytes`, {
          path,
        });
      }
    }
    const key = Buffer.concat(chunks, total);
    for (const c of chunks) c.fill(0);
    if (key.length === 0) {
      throw new AtrestError('USAGE', `key file ${path} is empty`, {
        path,
        hint: 'a key file needs at least one byte; e.g. head -c 64 /dev/urandom > FILE',
      });
    }
    return key;
  } catch (err) {
    throw fromSystemError(err, path, 'key file');
  } finally {
    await fh.close();
  }
}

export type { KekProvider, KekRef } from './kek.js';
export { keyUnavailable, redactUri, schemeOf } from './kek.js';
export type { ProviderOptions } from './provider.js';
export { providerFor } from './provider.js';
export { KEK_BYTES, unwrapKey, wrapKey } from './wrap.js';
export type { PlatformStoreOptions } from './platform.js';
export { PlatformKekProvider, rotatePlatform } from './platform.js';
export type { RevokeOptions } from './file-provider.js';
export { FileKekProvider, parseFileUri } from './file-provider.js';
export type { AuditSink, KeyEvent, KeyEventFields, KeyEventName } from './audit.js';
export { keyEvent, NO_AUDIT } from './audit.js';
export type { KeyManagerOptions, Unlocked, UnlockOptions } from './manager.js';
export { KeyManager } from './manager.js';
export type { BindingType, KekBinding } from './tokens.js';
export {
  bindings,
  BINDING_TYPES,
  keySourceOf,
  parseBinding,
  TOKEN_CMK,
  TOKEN_PLATFORM,
  TOKEN_RECOVERY,
} from './tokens.js';
export type { KeyslotEntry, KeyslotKind } from './keyslots.js';
export { BOUND_KEYSLOT_KDF, generateRecoveryPassphrase, listKeyslots } from './keyslots.js';
export { ConversionKeyringAdapter } from './conversion-keyring.js';
export { Pkcs11Provider } from './pkcs11.js';
export { KmipKekProvider, isUnreachable, kmipName } from './kmip/provider.js';
export { newKmipProvider } from './kmip/connect.js';
export { storedUri } from './kek.js';
export type { ProviderTable } from './provider-config.js';
export { loadProviders, parseProviders, PROVIDER_NAME_RE } from './provider-config.js';
export type { KekOrigin, ResolvedKek } from './provider-refs.js';
export { ProviderResolver, REF_PREFIX } from './provider-refs.js';
export type { ProviderEntry, ProviderType } from './provider-types.js';
export { PROVIDER_TYPES } from './provider-types.js';

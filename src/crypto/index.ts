// The crypto layer: AES-256-XTS sector encryption (dm-crypt aes-xts-plain64), a worker-thread pool with a shared keyring, KDFs, and AES-256 key wrap (RFC 5649).
export {
  assertXtsKey,
  assertXtsRun,
  SECTOR_SIZES,
  TWEAK_UNIT,
  XtsCipher,
  xtsInPlace,
  type XtsDirection,
} from './xts.js';
export { CryptoPool, type CryptoPoolOptions, type PoolKey } from './pool.js';
export { Keyring, LocalKeyring, type KeyRef } from './keyring.js';
export {
  argon2,
  benchmarkPbkdf2Iterations,
  pbkdf2,
  PBKDF2_MIN_ITERATIONS,
  type Argon2Params,
  type Argon2Type,
  type Pbkdf2Hash,
} from './kdf.js';
export { fipsActive, requireFips } from './fips.js';
export { aesKeyUnwrapPad, aesKeyWrapPad } from './key-wrap.js';

// atrest's LUKS2 tokens: the binding token (a keyslot secret wrapped by a KEK) and the recovery marker, read and written.
//
// Model. The volume key lives only in LUKS2 keyslots. A *bound* keyslot's passphrase is a random 256-bit
// secret; the secret, wrapped by a KEK, sits in a token linked to that keyslot:
//
//   { "type": "atrest-platform" | "atrest-cmk", "keyslots": ["1"],
//     "atrest_kek": "platform:" | "ref:NAME",  (a provider configured in providers.json; see provider-refs.ts)
//     "atrest_key_id": "...", "atrest_kek_version": 3, "atrest_wrap_alg": "aes256-kwp",
//     "atrest_wrapped": "<base64>" }
//
// Re-wrapping (rotation) rewrites only the token: the keyslot and the data are untouched. Recovery
// keyslots are plain passphrase keyslots marked by an `atrest-recovery` token without secrets.
// cryptsetup ignores token types it does not know, so it still opens these volumes with a passphrase.
// Pure: no I/O, no providers; the key manager does the wrapping.
import { AtrestError } from '../errors/index.js';
import type { JsonObject, Luks2Metadata, TokenInfo } from '../luks2/index.js';
import type { KekRef } from './kek.js';

export const TOKEN_PLATFORM = 'atrest-platform';
export const TOKEN_CMK = 'atrest-cmk';
export const TOKEN_RECOVERY = 'atrest-recovery';
/** Token types that wrap a keyslot secret under a KEK. */
export const BINDING_TYPES: readonly string[] = [TOKEN_PLATFORM, TOKEN_CMK];
/** Every token type atrest writes (dropped with the keyslot they name). */
export const ATREST_TYPES: readonly string[] = [TOKEN_PLATFORM, TOKEN_CMK, TOKEN_RECOVERY];

/** How a volume is keyed, as status shows it. */
export type KeySource = 'platform' | 'customer' | 'passphrase';

/** The key source of a volume from its KEK binding (its token type); no binding: a passphrase. */
export function keySourceOf(binding: { type: string } | null | undefined): KeySource {
  if (binding === null || binding === undefined) return 'passphrase';
  return binding.type === TOKEN_PLATFORM ? 'platform' : 'customer';
}

export type BindingType = 'atrest-platform' | 'atrest-cmk';

/** One atrest token that wraps a keyslot secret. */
export interface KekBinding {
  tokenId: number;
  type: BindingType;
  keyslot: number;
  /** The KEK as stored: `platform:`, `ref:NAME`, or a legacy full URI (resolved only via providers.json). */
  kek: string;
  keyId: string;
  version: number;
  wrapAlg: string;
  wrapped: Buffer;
}

function corrupt(meta: Luks2Metadata, t: TokenInfo, what: string): AtrestError {
  return new AtrestError('CORRUPT_HEADER', `${meta.headerPath}: token ${t.id} (${t.type}) ${what}`, {
    path: meta.headerPath,
    hint: 'remove the token (cryptsetup token remove) and unlock with a recovery key',
  });
}

/** Reads an atrest binding token; throws CORRUPT_HEADER when it is malformed. */
export function parseBinding(meta: Luks2Metadata, t: TokenInfo): KekBinding {
  const r = t.raw;
  const kek = r.atrest_kek;
  const keyId = r.atrest_key_id;
  const version = r.atrest_kek_version;
  const alg = r.atrest_wrap_alg;
  const wrapped = r.atrest_wrapped;
  if (t.keyslots.length !== 1 || t.keyslots[0] === undefined)
    throw corrupt(meta, t, 'must name exactly one keyslot');
  if (typeof kek !== 'string' || kek.length === 0) throw corrupt(meta, t, 'has no atrest_kek');
  if (typeof keyId !== 'string') throw corrupt(meta, t, 'has no atrest_key_id');
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1)
    throw corrupt(meta, t, 'has no valid atrest_kek_version');
  if (typeof alg !== 'string') throw corrupt(meta, t, 'has no atrest_wrap_alg');
  if (typeof wrapped !== 'string' || !/^[A-Za-z0-9+/]+={0,2}$/.test(wrapped))
    throw corrupt(meta, t, 'has no valid atrest_wrapped');
  return {
    tokenId: t.id,
    type: t.type as BindingType,
    keyslot: t.keyslots[0],
    kek,
    keyId,
    version,
    wrapAlg: alg,
    wrapped: Buffer.from(wrapped, 'base64'),
  };
}

/** Every atrest binding token of the volume, by token id. */
export function bindings(meta: Luks2Metadata): KekBinding[] {
  return meta.tokens.filter((t) => BINDING_TYPES.includes(t.type)).map((t) => parseBinding(meta, t));
}

/**
 * A binding token's JSON, linked to no keyslot yet (addKeyslot/setToken link it). `ref.uri` is the
 * stored form (`platform:` or `ref:NAME`), never a host URI.
 */
export function bindingTokenJson(
  type: BindingType,
  ref: KekRef,
  wrapAlg: string,
  wrapped: Buffer,
): JsonObject {
  return {
    type,
    keyslots: [],
    atrest_kek: ref.uri,
    atrest_key_id: ref.keyId,
    atrest_kek_version: ref.version,
    atrest_wrap_alg: wrapAlg,
    atrest_wrapped: wrapped.toString('base64'),
  };
}

/** The token marking a recovery keyslot (no secret in it): its creation time only. */
export function recoveryTokenJson(created: Date): JsonObject {
  return { type: TOKEN_RECOVERY, keyslots: [], atrest_created: created.toISOString() };
}

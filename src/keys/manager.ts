// The key manager: binds LUKS2 keyslots to KEKs through atrest tokens; format, unlock, re-wrap, move, recover, list, remove.
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
import { randomBytes, randomInt } from 'node:crypto';
import { AtrestError, isAtrestError } from '../errors/index.js';
import {
  addKeyslot,
  formatLuks2,
  keyslotUnusableReason,
  readLuks2,
  removeKeyslot,
  resolveKdf,
  setToken,
  unlockVolumeKey,
  updateLuks2,
  type FormatOptions,
  type JsonObject,
  type KdfChoice,
  type Luks2Metadata,
  type TokenInfo,
} from '../luks2/index.js';
import { NO_AUDIT, type AuditSink, type KeyEvent } from './audit.js';
import { FileKekProvider } from './file-provider.js';
import { Pkcs11Provider } from './pkcs11.js';
import { newKmipProvider } from './kmip/connect.js';
import type { KmipKekProvider } from './kmip/provider.js';
import { PlatformKekProvider } from './platform.js';
import type { ProviderTable } from './provider-config.js';
import { ProviderResolver, type KekOrigin, type ResolvedKek } from './provider-refs.js';
import { redactUri, storedUri, type KekProvider, type KekRef } from './kek.js';
import { recordKnownVolume } from './registry.js';

export const TOKEN_PLATFORM = 'atrest-platform';
export const TOKEN_CMK = 'atrest-cmk';
export const TOKEN_RECOVERY = 'atrest-recovery';
/** Token types that wrap a keyslot secret under a KEK. */
export const BINDING_TYPES: readonly string[] = [TOKEN_PLATFORM, TOKEN_CMK];
const ATREST_TYPES: readonly string[] = [TOKEN_PLATFORM, TOKEN_CMK, TOKEN_RECOVERY];

/** How a volume is keyed, as status shows it. */
export type KeySource = 'platform' | 'customer' | 'passphrase';

/** The key source of a volume from its KEK binding (its token type); no binding: a passphrase. */
export function keySourceOf(binding: { type: string } | null | undefined): KeySource {
  if (binding === null || binding === undefined) return 'passphrase';
  return binding.type === TOKEN_PLATFORM ? 'platform' : 'customer';
}
export const SECRET_BYTES = 32;
/**
 * KDF of bound keyslots. Their passphrase is 256 random bits, so key stretching adds nothing; this is
 * cryptsetup's minimum (what systemd-cryptenroll uses for TPM2/FIDO2 tokens too). PBKDF2: FIPS-approved.
 */
export const BOUND_KEYSLOT_KDF: KdfChoice = { type: 'pbkdf2', hash: 'sha256', iterations: 1000 };

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

export type KeyslotKind = 'platform' | 'customer' | 'recovery' | 'passphrase';

export interface KeyslotEntry {
  slot: number;
  kind: KeyslotKind;
  token: number | null;
  kdf: string;
  priority: number;
  /** KEK URI, secrets redacted (bound keyslots). */
  kek?: string;
  keyId?: string;
  kekVersion?: number;
  /** Whether this keyslot can unlock the data segment here (digest linked, supported type/KDF). */
  usable: boolean;
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

/** `ref.uri` is the stored form (`platform:` or `ref:NAME`), never a host URI. */
function bindingTokenJson(type: BindingType, ref: KekRef, wrapAlg: string, wrapped: Buffer): JsonObject {
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

/** Lists keyslots with their kind, token and KEK (URI redacted). */
export function listKeyslots(meta: Luks2Metadata): KeyslotEntry[] {
  const byKeyslot = new Map<number, TokenInfo>();
  for (const t of meta.tokens) for (const k of t.keyslots) if (!byKeyslot.has(k)) byKeyslot.set(k, t);
  return meta.keyslots.map((k): KeyslotEntry => {
    const t = byKeyslot.get(k.id);
    const entry: KeyslotEntry = {
      slot: k.id,
      kind: 'passphrase',
      token: t?.id ?? null,
      kdf: k.kdf,
      priority: k.priority,
      usable: keyslotUnusableReason(meta, k.id) === null,
    };
    if (t && BINDING_TYPES.includes(t.type)) {
      const b = parseBinding(meta, t);
      entry.kind = keySourceOf(b);
      entry.kek = redactUri(b.kek);
      entry.keyId = b.keyId;
      entry.kekVersion = b.version;
    } else if (t?.type === TOKEN_RECOVERY) {
      entry.kind = 'recovery';
    }
    return entry;
  });
}

/** A recovery passphrase: 8 groups of 5 characters from a 32-symbol alphabet, 200 bits. */
export function generateRecoveryPassphrase(): Buffer {
  const alphabet = Buffer.from('0123456789abcdefghjkmnpqrstvwxyz', 'latin1');
  const out = Buffer.alloc(8 * 5 + 7);
  let o = 0;
  for (let g = 0; g < 8; g++) {
    if (g > 0) out[o++] = 0x2d; // '-'
    for (let i = 0; i < 5; i++) out[o++] = alphabet[randomInt(32)] ?? 0x30;
  }
  return out;
}

export interface KeyManagerOptions {
  /** Platform key store (default /var/lib/atrest/keys). */
  keyStoreDir?: string;
  /**
   * The KEK the user gave (e.g. `open --kek`): when it resolves to the same configured provider as a
   * token, its PIN (pin-value) is used, so a PIN given at open time reaches the provider unstored.
   */
  kekOverride?: string;
  /** The host's provider configuration (default /etc/atrest/providers.json). */
  providersFile?: string;
  /** An already loaded provider table (tests). */
  providerTable?: ProviderTable;
  audit?: AuditSink;
  /** FIPS mode: only PBKDF2 keyslots unlock (no Argon2). */
  fips?: boolean;
  /** Shared PKCS#11 provider (the daemon keeps one for its sessions); created on demand otherwise. */
  pkcs11?: Pkcs11Provider;
  /** KMIP provider (tests give one with a fake client); created on demand otherwise, closed by close(). */
  kmip?: KmipKekProvider;
}

/** How to unlock for an administrative change: a passphrase (key file), else through the tokens. */
export interface UnlockOptions {
  passphrase?: Uint8Array;
  keyslot?: number;
}

export interface Unlocked {
  volumeKey: Buffer;
  keyslot: number;
  /** The binding used, or null for a passphrase. */
  binding: KekBinding | null;
  /** The KEK reference used (URI from host configuration, may carry a PIN: never log or store it). */
  ref: KekRef | null;
  provider: KekProvider | null;
}

export class KeyManager {
  private readonly audit: AuditSink;
  private pkcs11: Pkcs11Provider | null;
  private readonly ownsPkcs11: boolean;
  private kmip: KmipKekProvider | null;
  private readonly resolver: ProviderResolver;

  constructor(private readonly opts: KeyManagerOptions = {}) {
    this.audit = opts.audit ?? NO_AUDIT;
    this.pkcs11 = opts.pkcs11 ?? null;
    this.ownsPkcs11 = opts.pkcs11 === undefined;
    this.kmip = opts.kmip ?? null;
    const file = new FileKekProvider();
    this.resolver = new ProviderResolver({
      ...(opts.providersFile === undefined ? {} : { file: opts.providersFile }),
      ...(opts.providerTable === undefined ? {} : { table: opts.providerTable }),
      ...(opts.kekOverride === undefined ? {} : { override: opts.kekOverride }),
      shared: {
        file: () => file,
        pkcs11: () => (this.pkcs11 ??= new Pkcs11Provider()),
        kmip: () => (this.kmip ??= newKmipProvider()),
      },
      platform: () => this.platform(),
    });
  }

  get keyStoreDir(): string | undefined {
    return this.opts.keyStoreDir;
  }

  /** Records a key event that happened outside this manager (e.g. `key revoke`). */
  auditEvent(e: KeyEvent): void {
    this.audit(e);
  }

  /** Closes PKCS#11 sessions and KMIP connections this manager opened. */
  close(): void {
    if (this.ownsPkcs11) this.pkcs11?.close();
    this.pkcs11 = null;
    if (this.opts.kmip === undefined) void this.kmip?.close();
    this.kmip = null;
  }

  /**
   * The provider for a KEK name: `platform:`, `ref:NAME`, or a full URI that matches a provider
   * configured in providers.json. `image` (a token's atrest_kek) never names a module or file itself;
   * `cli` (root's --kek) may also be a bare NAME and carry a PIN. Refused before anything is loaded.
   */
  resolve(kek: string, origin: KekOrigin = 'image'): Promise<ResolvedKek> {
    return this.resolver.resolve(kek, origin);
  }

  /** A stored KEK without any PIN a crafted token may carry (for newBinding of an existing binding). */
  effectiveUri(stored: string): string {
    return storedUri(stored);
  }

  /**
   * A fresh secret wrapped under the newest version of `kek` (platform: when undefined). The token
   * stores `platform:` or `ref:NAME`; the returned ref's uri is that stored form.
   */
  async newBinding(kek: string | undefined): Promise<{ secret: Buffer; token: JsonObject; ref: KekRef }> {
    const r = await this.resolve(kek ?? 'platform:', 'cli');
    const type: BindingType = r.name === null ? TOKEN_PLATFORM : TOKEN_CMK;
    const ref = await r.provider.current(r.uri);
    const secret = randomBytes(SECRET_BYTES);
    try {
      const wrapped = await r.provider.wrap(ref, secret);
      const stored = { ...ref, uri: r.stored };
      return { secret, token: bindingTokenJson(type, stored, r.provider.wrapAlg, wrapped), ref: stored };
    } catch (err) {
      secret.fill(0);
      throw err;
    }
  }

  /** Formats a volume whose keyslot 0 is bound to `kekUri` (default: the platform key). */
  async format(
    opts: Omit<FormatOptions, 'passphrase' | 'token' | 'kdf' | 'pbkdf2Iterations' | 'iterTimeMs'>,
    kekUri?: string,
  ): Promise<{ uuid: string; keyslot: number; ref: KekRef }> {
    const b = await this.newBinding(kekUri);
    try {
      const r = await formatLuks2({ ...opts, passphrase: b.secret, kdf: BOUND_KEYSLOT_KDF, token: b.token });
      const provider = redactUri(b.ref.uri);
      this.audit({
        event: 'wrap',
        volume: opts.imagePath,
        uuid: r.uuid,
        slot: 0,
        provider,
        keyId: b.ref.keyId,
        kekVersion: b.ref.version,
      });
      if (b.token.type === TOKEN_PLATFORM)
        await this.remember(r.uuid, opts.headerPath ?? opts.imagePath, opts.imagePath);
      return { ...r, ref: b.ref };
    } finally {
      b.secret.fill(0);
    }
  }

  private async remember(uuid: string, header: string, image: string = header): Promise<void> {
    await recordKnownVolume(this.platform().dir, uuid, header, image);
  }

  private platform(): PlatformKekProvider {
    return new PlatformKekProvider(
      this.opts.keyStoreDir === undefined ? {} : { keyStoreDir: this.opts.keyStoreDir },
    );
  }

  /** Unwraps a binding's secret through its provider. Caller wipes. */
  async unwrapBinding(
    b: KekBinding,
  ): Promise<{ secret: Buffer; ref: KekRef; provider: KekProvider; stored: string }> {
    const { uri, provider, stored } = await this.resolve(b.kek, 'image');
    if (provider.wrapAlg !== b.wrapAlg) {
      throw new AtrestError(
        'UNSUPPORTED',
        `token ${b.tokenId} was wrapped with ${b.wrapAlg}, but ${stored} uses ${provider.wrapAlg}`,
        { hint: 'unlock with a recovery key' },
      );
    }
    const ref: KekRef = { uri, keyId: b.keyId, version: b.version };
    return { secret: await provider.unwrap(ref, b.wrapped), ref, provider, stored };
  }

  /**
   * Recovers the volume key: with `passphrase`, from any keyslot (as cryptsetup); otherwise through the
   * volume's binding tokens. Failures name the token and KEK, never a secret. Caller wipes volumeKey.
   */
  async unlock(meta: Luks2Metadata, opts: UnlockOptions = {}): Promise<Unlocked> {
    const volume = meta.imagePath;
    if (opts.passphrase !== undefined) {
      try {
        const u = await this.unlockPassphrase(meta, opts.passphrase, opts.keyslot);
        this.audit({ event: 'unlock', volume, uuid: meta.uuid, slot: u.keyslot, provider: 'passphrase' });
        return { ...u, binding: null, ref: null, provider: null };
      } catch (err) {
        this.audit({
          event: 'unlock-failed',
          volume,
          uuid: meta.uuid,
          provider: 'passphrase',
          code: codeOf(err),
        });
        throw err;
      }
    }
    let list = bindings(meta);
    if (opts.keyslot !== undefined) list = list.filter((b) => b.keyslot === opts.keyslot);
    if (list.length === 0) {
      this.audit({
        event: 'unlock-failed',
        volume,
        uuid: meta.uuid,
        code: 'WRONG_KEY',
        reason: 'no key token',
      });
      throw new AtrestError(
        'WRONG_KEY',
        `${meta.headerPath} is not bound to a platform or customer key${opts.keyslot === undefined ? '' : ` in key slot ${opts.keyslot}`}`,
        { path: meta.headerPath, hint: 'unlock it with --key-file FILE (a passphrase or recovery key)' },
      );
    }
    let firstError: unknown = null;
    for (const b of list) {
      const provider = redactUri(b.kek);
      let secret: Buffer | null = null;
      const what = {
        volume,
        uuid: meta.uuid,
        slot: b.keyslot,
        provider,
        keyId: b.keyId,
        kekVersion: b.version,
      };
      try {
        const u = await this.unwrapBinding(b);
        secret = u.secret;
        const unlocked = await this.unlockSlot(meta, b, secret);
        this.audit({ event: 'unlock', ...what });
        if (b.type === TOKEN_PLATFORM)
          await this.remember(meta.uuid, meta.headerPath, meta.imagePath).catch(() => undefined);
        return { volumeKey: unlocked, keyslot: b.keyslot, binding: b, ref: u.ref, provider: u.provider };
      } catch (err) {
        this.audit({ event: 'unlock-failed', ...what, code: codeOf(err) });
        // KEY_UNAVAILABLE says the most (a revoked key); keep the first of those, else the first error
        if (
          firstError === null ||
          (isAtrestError(err) && err.code === 'KEY_UNAVAILABLE' && !isUnavailable(firstError))
        )
          firstError = err;
      } finally {
        secret?.fill(0);
      }
    }
    throw firstError instanceof Error ? firstError : new AtrestError('WRONG_KEY', 'unlock failed');
  }

  /** The volume key from a binding's secret; a mismatch is a token that does not match its keyslot. */
  private async unlockSlot(meta: Luks2Metadata, b: KekBinding, secret: Buffer): Promise<Buffer> {
    this.checkFipsKeyslot(meta, b.keyslot);
    try {
      return (await unlockVolumeKey(meta, secret, { keyslot: b.keyslot })).volumeKey;
    } catch (err) {
      if (isAtrestError(err) && err.code === 'WRONG_KEY') {
        throw new AtrestError(
          'WRONG_KEY',
          `${meta.headerPath}: token ${b.tokenId} (${b.type}) does not match its key slot ${b.keyslot}`,
          {
            path: meta.headerPath,
            hint: 'the token was altered or belongs to another volume; unlock with a recovery key',
          },
        );
      }
      throw err;
    }
  }

  private checkFipsKeyslot(meta: Luks2Metadata, keyslot: number): void {
    if (!this.opts.fips) return;
    const k = meta.keyslots.find((x) => x.id === keyslot);
    if (k !== undefined && k.kdf !== 'pbkdf2') {
      throw new AtrestError(
        'UNSUPPORTED',
        `${meta.headerPath}: key slot ${keyslot} uses ${k.kdf}, not allowed in FIPS mode`,
        {
          path: meta.headerPath,
          hint: 'use a PBKDF2 key slot (atrest key add-recovery, or cryptsetup luksAddKey --pbkdf pbkdf2)',
        },
      );
    }
  }

  private async unlockPassphrase(
    meta: Luks2Metadata,
    passphrase: Uint8Array,
    keyslot: number | undefined,
  ): Promise<{ volumeKey: Buffer; keyslot: number }> {
    if (!this.opts.fips) return unlockVolumeKey(meta, passphrase, keyslot === undefined ? {} : { keyslot });
    if (keyslot !== undefined) {
      this.checkFipsKeyslot(meta, keyslot);
      return unlockVolumeKey(meta, passphrase, { keyslot });
    }
    const slots = meta.keyslots
      .filter((k) => k.kdf === 'pbkdf2' && k.priority > 0 && keyslotUnusableReason(meta, k.id) === null)
      .sort((a, b) => b.priority - a.priority || a.id - b.id);
    for (const k of slots) {
      try {
        return await unlockVolumeKey(meta, passphrase, { keyslot: k.id });
      } catch (err) {
        if (!(isAtrestError(err) && err.code === 'WRONG_KEY')) throw err;
      }
    }
    throw new AtrestError(
      'WRONG_KEY',
      `${meta.headerPath}: no PBKDF2 key slot matches this key (FIPS mode)`,
      {
        path: meta.headerPath,
        hint: 'in FIPS mode only PBKDF2 key slots are used',
      },
    );
  }

  /**
   * Re-wraps a binding under the newest version of its KEK (token only; keyslot and data untouched).
   * A legacy token (full URI matching a configured provider) is rewritten to its `ref:NAME`.
   * Returns the versions, or null when it already uses the newest. The image must still hold `b`.
   */
  async rewrap(
    meta: Luks2Metadata,
    b: KekBinding,
  ): Promise<{ from: number; to: number; kek: string } | null> {
    // under the metadata lock, from the token as it is now (another process may have re-wrapped it)
    return updateLuks2(meta, async (fresh) => {
      const now = bindings(fresh).find((x) => x.tokenId === b.tokenId);
      if (now === undefined || now.keyslot !== b.keyslot || now.kek !== b.kek) {
        throw new AtrestError(
          'IMAGE_BUSY',
          `${meta.headerPath}: token ${b.tokenId} changed while it was being re-wrapped`,
          { path: meta.headerPath, hint: 'another command changed the key slots; try again' },
        );
      }
      return this.rewrapLocked(fresh, now);
    });
  }

  private async rewrapLocked(
    meta: Luks2Metadata,
    b: KekBinding,
  ): Promise<{ from: number; to: number; kek: string } | null> {
    const { secret, ref, provider, stored } = await this.unwrapBinding(b);
    try {
      const cur = await provider.current(ref.uri);
      if (cur.version === b.version && cur.keyId === b.keyId && stored === b.kek) return null;
      // the secret must really open its keyslot before we write a token for it
      (await this.unlockSlot(meta, b, secret)).fill(0);
      const wrapped = await provider.wrap(cur, secret);
      const token = bindingTokenJson(b.type, { ...cur, uri: stored }, provider.wrapAlg, wrapped);
      token.keyslots = [String(b.keyslot)];
      await setToken(meta, b.tokenId, token);
      this.audit({
        event: 'rotate',
        volume: meta.imagePath,
        uuid: meta.uuid,
        slot: b.keyslot,
        provider: stored,
        keyId: cur.keyId,
        kekVersion: cur.version,
        fromVersion: b.version,
      });
      if (b.type === TOKEN_PLATFORM) await this.remember(meta.uuid, meta.headerPath, meta.imagePath);
      return { from: b.version, to: cur.version, kek: stored };
    } finally {
      secret.fill(0);
    }
  }

  /**
   * Moves the volume to `kekUri`: adds a keyslot bound to it, checks that it unlocks through the
   * provider, and only then removes the previous platform/customer keyslots. Recovery and passphrase
   * keyslots stay. Returns the new keyslot.
   */
  async useKek(
    meta: Luks2Metadata,
    kekUri: string,
    auth: UnlockOptions = {},
  ): Promise<{ keyslot: number; ref: KekRef; removed: number[] }> {
    const u = await this.unlock(meta, auth);
    let b: Awaited<ReturnType<KeyManager['newBinding']>>;
    try {
      b = await this.newBinding(kekUri);
    } catch (err) {
      u.volumeKey.fill(0);
      throw err;
    }
    const provider = redactUri(b.ref.uri);
    // add, verify and remove in one hold of the metadata lock, on the header as it is now
    const { keyslot, removed } = await updateLuks2(meta, async (fresh) => {
      const old = bindings(fresh);
      let keyslot: number;
      try {
        keyslot = await addKeyslot(fresh, u.volumeKey, b.secret, { kdf: BOUND_KEYSLOT_KDF, token: b.token });
      } finally {
        b.secret.fill(0);
        u.volumeKey.fill(0);
      }
      this.audit({
        event: 'wrap',
        volume: meta.imagePath,
        uuid: meta.uuid,
        slot: keyslot,
        provider,
        keyId: b.ref.keyId,
        kekVersion: b.ref.version,
      });
      // verify through the provider, from the header as written, before removing anything
      const written = await readLuks2(meta.headerPath, { imagePath: meta.imagePath });
      const check = await this.unlock(written, { keyslot });
      check.volumeKey.fill(0);
      const removed: number[] = [];
      for (const o of old) {
        if (o.keyslot === keyslot) continue;
        await removeKeyslot(written, o.keyslot, { dropTokenTypes: ATREST_TYPES });
        removed.push(o.keyslot);
        this.audit({
          event: 'remove-keyslot',
          volume: meta.imagePath,
          uuid: meta.uuid,
          slot: o.keyslot,
          provider: redactUri(o.kek),
          kekVersion: o.version,
        });
      }
      Object.assign(fresh, written);
      return { keyslot, removed };
    });
    this.audit({
      event: 'use-kek',
      volume: meta.imagePath,
      uuid: meta.uuid,
      slot: keyslot,
      provider,
      kekVersion: b.ref.version,
    });
    if (b.token.type === TOKEN_PLATFORM) await this.remember(meta.uuid, meta.headerPath, meta.imagePath);
    return { keyslot, ref: b.ref, removed };
  }

  /** Adds a recovery passphrase keyslot; returns the passphrase (print once, then wipe). */
  async addRecovery(
    meta: Luks2Metadata,
    auth: UnlockOptions = {},
    kdf?: KdfChoice,
  ): Promise<{ keyslot: number; passphrase: Buffer }> {
    const u = await this.unlock(meta, auth);
    const passphrase = generateRecoveryPassphrase();
    try {
      // benchmark first; then pick the key slot and area on the header as it is under the lock
      const choice = await resolveKdf(
        kdf ?? { type: 'pbkdf2', hash: 'sha256', iterTimeMs: 2000 },
        u.volumeKey.length,
      );
      const keyslot = await updateLuks2(meta, (fresh) =>
        addKeyslot(fresh, u.volumeKey, passphrase, {
          kdf: choice,
          token: { type: TOKEN_RECOVERY, keyslots: [], atrest_created: new Date().toISOString() },
        }),
      );
      this.audit({ event: 'add-recovery', volume: meta.imagePath, uuid: meta.uuid, slot: keyslot });
      return { keyslot, passphrase };
    } catch (err) {
      passphrase.fill(0);
      throw err;
    } finally {
      u.volumeKey.fill(0);
    }
  }

  /** Removes a keyslot (and its atrest token); refuses the last keyslot that can unlock the volume. */
  async removeSlot(meta: Luks2Metadata, slot: number): Promise<void> {
    await updateLuks2(meta, (fresh) => this.removeSlotLocked(fresh, slot));
  }

  private async removeSlotLocked(meta: Luks2Metadata, slot: number): Promise<void> {
    const entries = listKeyslots(meta);
    const target = entries.find((e) => e.slot === slot);
    if (!target) {
      throw new AtrestError('USAGE', `${meta.headerPath}: there is no key slot ${slot}`, {
        path: meta.headerPath,
        hint: 'see atrest key list IMAGE',
      });
    }
    if (!entries.some((e) => e.slot !== slot && e.usable)) {
      throw new AtrestError(
        'USAGE',
        `${meta.headerPath}: key slot ${slot} is the last one that can unlock the volume; removing it loses the data`,
        { path: meta.headerPath, hint: 'add another first (atrest key add-recovery IMAGE)' },
      );
    }
    await removeKeyslot(meta, slot, { dropTokenTypes: ATREST_TYPES });
    this.audit({
      event: 'remove-keyslot',
      volume: meta.imagePath,
      uuid: meta.uuid,
      slot,
      ...(target.kek === undefined ? {} : { provider: target.kek }),
      ...(target.kekVersion === undefined ? {} : { kekVersion: target.kekVersion }),
    });
  }

  /** Makes a new platform KEK version. */
  async rotatePlatform(): Promise<KekRef> {
    const ref = await this.platform().rotatePlatform();
    this.audit({
      event: 'rotate-platform',
      provider: 'platform:',
      keyId: ref.keyId,
      kekVersion: ref.version,
    });
    return ref;
  }
}

function codeOf(err: unknown): string {
  return isAtrestError(err) ? err.code : 'INTERNAL';
}

function isUnavailable(err: unknown): boolean {
  return isAtrestError(err) && err.code === 'KEY_UNAVAILABLE';
}

// The key manager: binds LUKS2 keyslots to KEKs (see tokens.ts); format, unlock, re-wrap, move, recover, remove.
//
// It composes the pieces and records every key event in the audit log: token format (tokens.ts), keyslot
// listing and recovery (keyslots.ts), unlock policy incl. FIPS (unlock-policy.ts), KEK providers
// (kek-access.ts) and the platform key's lifecycle (platform-keys.ts).
import { AtrestError } from '../errors/index.js';
import {
  addKeyslot,
  formatLuks2,
  readLuks2,
  removeKeyslot,
  setToken,
  updateLuks2,
  type FormatOptions,
  type JsonObject,
  type KdfChoice,
  type Luks2Metadata,
} from '../luks2/index.js';
import { keyEvent, NO_AUDIT, type AuditSink, type KeyEvent } from './audit.js';
import { KekAccess, type NewBinding, type UnwrappedBinding } from './kek-access.js';
import { redactUri, storedUri, type KekProvider, type KekRef } from './kek.js';
import {
  addRecoveryKeyslot,
  BOUND_KEYSLOT_KDF,
  generateRecoveryPassphrase,
  removableKeyslot,
} from './keyslots.js';
import type { KmipKekProvider } from './kmip/provider.js';
import type { Pkcs11Provider } from './pkcs11.js';
import { PlatformKeys } from './platform-keys.js';
import type { ProviderTable } from './provider-config.js';
import type { KekOrigin, ResolvedKek } from './provider-refs.js';
import { ATREST_TYPES, bindings, bindingTokenJson, TOKEN_PLATFORM, type KekBinding } from './tokens.js';
import {
  bindingsToTry,
  codeOf,
  noBindingError,
  preferredError,
  unlockBoundKeyslot,
  unlockWithPassphrase,
} from './unlock-policy.js';

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
  private readonly keks: KekAccess;
  private readonly platformKeys: PlatformKeys;

  constructor(private readonly opts: KeyManagerOptions = {}) {
    this.audit = opts.audit ?? NO_AUDIT;
    this.platformKeys = new PlatformKeys(opts.keyStoreDir);
    this.keks = new KekAccess(opts, () => this.platformKeys.provider());
  }

  get keyStoreDir(): string | undefined {
    return this.opts.keyStoreDir;
  }

  /** Records a key event that happened outside this manager (e.g. `key revoke`); build it with keyEvent. */
  auditEvent(e: KeyEvent): void {
    this.audit(e);
  }

  /** Closes PKCS#11 sessions and KMIP connections this manager opened. */
  close(): void {
    this.keks.close();
  }

  /**
   * The provider for a KEK name: `platform:`, `ref:NAME`, or a full URI that matches a provider
   * configured in providers.json. `image` (a token's atrest_kek) never names a module or file itself;
   * `cli` (root's --kek) may also be a bare NAME and carry a PIN. Refused before anything is loaded.
   */
  resolve(kek: string, origin: KekOrigin = 'image'): Promise<ResolvedKek> {
    return this.keks.resolve(kek, origin);
  }

  /** A stored KEK without any PIN a crafted token may carry (for newBinding of an existing binding). */
  effectiveUri(stored: string): string {
    return storedUri(stored);
  }

  /**
   * A fresh secret wrapped under the newest version of `kek` (platform: when undefined). The token
   * stores `platform:` or `ref:NAME`; the returned ref's uri is that stored form.
   */
  newBinding(kek: string | undefined): Promise<{ secret: Buffer; token: JsonObject; ref: KekRef }> {
    return this.keks.newBinding(kek ?? 'platform:');
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
      this.audit(
        keyEvent('wrap', {
          volume: opts.imagePath,
          uuid: r.uuid,
          slot: 0,
          provider,
          keyId: b.ref.keyId,
          kekVersion: b.ref.version,
        }),
      );
      if (b.token.type === TOKEN_PLATFORM)
        await this.platformKeys.remember(r.uuid, opts.headerPath ?? opts.imagePath, opts.imagePath);
      return { ...r, ref: b.ref };
    } finally {
      b.secret.fill(0);
    }
  }

  /** Unwraps a binding's secret through its provider. Caller wipes. */
  unwrapBinding(
    b: KekBinding,
  ): Promise<{ secret: Buffer; ref: KekRef; provider: KekProvider; stored: string }> {
    return this.keks.unwrapBinding(b);
  }

  /**
   * Recovers the volume key: with `passphrase`, from any keyslot (as cryptsetup); otherwise through the
   * volume's binding tokens. Failures name the token and KEK, never a secret. Caller wipes volumeKey.
   */
  async unlock(meta: Luks2Metadata, opts: UnlockOptions = {}): Promise<Unlocked> {
    const volume = meta.imagePath;
    const fips = this.opts.fips === true;
    if (opts.passphrase !== undefined) {
      try {
        const u = await unlockWithPassphrase(meta, opts.passphrase, opts.keyslot, fips);
        this.audit(keyEvent('unlock', { volume, uuid: meta.uuid, slot: u.keyslot, provider: 'passphrase' }));
        return { ...u, binding: null, ref: null, provider: null };
      } catch (err) {
        this.audit(
          keyEvent('unlock-failed', { volume, uuid: meta.uuid, provider: 'passphrase', code: codeOf(err) }),
        );
        throw err;
      }
    }
    const list = bindingsToTry(meta, opts.keyslot);
    if (list.length === 0) {
      this.audit(
        keyEvent('unlock-failed', { volume, uuid: meta.uuid, code: 'WRONG_KEY', reason: 'no key token' }),
      );
      throw noBindingError(meta, opts.keyslot);
    }
    let firstError: unknown = null;
    for (const b of list) {
      let secret: Buffer | null = null;
      const what = {
        volume,
        uuid: meta.uuid,
        slot: b.keyslot,
        provider: redactUri(b.kek),
        keyId: b.keyId,
        kekVersion: b.version,
      };
      try {
        const u = await this.unwrapBinding(b);
        secret = u.secret;
        const unlocked = await unlockBoundKeyslot(meta, b, secret, fips);
        this.audit(keyEvent('unlock', what));
        if (b.type === TOKEN_PLATFORM)
          await this.platformKeys.remember(meta.uuid, meta.headerPath, meta.imagePath).catch(() => undefined);
        return { volumeKey: unlocked, keyslot: b.keyslot, binding: b, ref: u.ref, provider: u.provider };
      } catch (err) {
        this.audit(keyEvent('unlock-failed', { ...what, code: codeOf(err) }));
        firstError = preferredError(firstError, err);
      } finally {
        secret?.fill(0);
      }
    }
    throw firstError instanceof Error ? firstError : new AtrestError('WRONG_KEY', 'unlock failed');
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
    const { secret, ref, provider, stored }: UnwrappedBinding = await this.unwrapBinding(b);
    try {
      const cur = await provider.current(ref.uri);
      if (cur.version === b.version && cur.keyId === b.keyId && stored === b.kek) return null;
      // the secret must really open its keyslot before we write a token for it
      (await unlockBoundKeyslot(meta, b, secret, this.opts.fips === true)).fill(0);
      const wrapped = await provider.wrap(cur, secret);
      const token = bindingTokenJson(b.type, { ...cur, uri: stored }, provider.wrapAlg, wrapped);
      token.keyslots = [String(b.keyslot)];
      await setToken(meta, b.tokenId, token);
      this.audit(
        keyEvent('rotate', {
          volume: meta.imagePath,
          uuid: meta.uuid,
          slot: b.keyslot,
          provider: stored,
          keyId: cur.keyId,
          kekVersion: cur.version,
          fromVersion: b.version,
        }),
      );
      if (b.type === TOKEN_PLATFORM)
        await this.platformKeys.remember(meta.uuid, meta.headerPath, meta.imagePath);
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
    let b: NewBinding;
    try {
      b = await this.newBinding(kekUri);
    } catch (err) {
      u.volumeKey.fill(0);
      throw err;
    }
    const provider = redactUri(b.ref.uri);
    const volume = { volume: meta.imagePath, uuid: meta.uuid };
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
      this.audit(
        keyEvent('wrap', {
          ...volume,
          slot: keyslot,
          provider,
          keyId: b.ref.keyId,
          kekVersion: b.ref.version,
        }),
      );
      // verify through the provider, from the header as written, before removing anything
      const written = await readLuks2(meta.headerPath, { imagePath: meta.imagePath });
      const check = await this.unlock(written, { keyslot });
      check.volumeKey.fill(0);
      const removed: number[] = [];
      for (const o of old) {
        if (o.keyslot === keyslot) continue;
        await removeKeyslot(written, o.keyslot, { dropTokenTypes: ATREST_TYPES });
        removed.push(o.keyslot);
        this.audit(
          keyEvent('remove-keyslot', {
            ...volume,
            slot: o.keyslot,
            provider: redactUri(o.kek),
            kekVersion: o.version,
          }),
        );
      }
      Object.assign(fresh, written);
      return { keyslot, removed };
    });
    this.audit(keyEvent('use-kek', { ...volume, slot: keyslot, provider, kekVersion: b.ref.version }));
    if (b.token.type === TOKEN_PLATFORM)
      await this.platformKeys.remember(meta.uuid, meta.headerPath, meta.imagePath);
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
      const keyslot = await addRecoveryKeyslot(meta, u.volumeKey, passphrase, kdf);
      this.audit(keyEvent('add-recovery', { volume: meta.imagePath, uuid: meta.uuid, slot: keyslot }));
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
    await updateLuks2(meta, async (fresh) => {
      const target = removableKeyslot(fresh, slot);
      await removeKeyslot(fresh, slot, { dropTokenTypes: ATREST_TYPES });
      this.audit(
        keyEvent('remove-keyslot', {
          volume: fresh.imagePath,
          uuid: fresh.uuid,
          slot,
          provider: target.kek,
          kekVersion: target.kekVersion,
        }),
      );
    });
  }

  /** Makes a new platform KEK version. */
  async rotatePlatform(): Promise<KekRef> {
    const ref = await this.platformKeys.rotate();
    this.audit(
      keyEvent('rotate-platform', { provider: 'platform:', keyId: ref.keyId, kekVersion: ref.version }),
    );
    return ref;
  }
}

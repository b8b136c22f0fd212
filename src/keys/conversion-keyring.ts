// A KeyManager as the keyring an in-place conversion needs (volume/convert/with-keys.ts ConversionKeyring, matched by shape).
import type { FormatOptions, JsonObject, Luks2Metadata, NewKeyslot } from '../luks2/index.js';
import { keyEvent } from './audit.js';
import { BOUND_KEYSLOT_KDF, generateRecoveryPassphrase, listKeyslots } from './keyslots.js';
import type { KeyManager, Unlocked, UnlockOptions } from './manager.js';
import { bindings, TOKEN_RECOVERY } from './tokens.js';

/** How a keyslot moves to a new volume key: rebound under the same KEK, or by its (recovery) passphrase. */
export type KeyslotMove =
  | { slot: number; kind: 'bound'; rebind(): Promise<NewKeyslot> }
  | { slot: number; kind: 'recovery' | 'passphrase' };

/**
 * The key side of encrypting and re-encrypting in place, for the daemon and `atrest encrypt`/`reencrypt`
 * to hand to volume/'s conversion: formatting a bound keyslot, unlocking, rebinding keyslots, recovery
 * passphrases and tokens, audit. keys/ does not import volume/, so this class only has the same shape.
 */
export class ConversionKeyringAdapter {
  constructor(private readonly km: KeyManager) {}

  /** Formats a volume whose keyslot 0 is bound to `kek` (default: the platform key). */
  async format(
    req: Omit<FormatOptions, 'passphrase' | 'token' | 'kdf' | 'pbkdf2Iterations' | 'iterTimeMs'>,
    kek: string | undefined,
  ): Promise<void> {
    await this.km.format(req, kek);
  }

  unlock(meta: Luks2Metadata, opts?: UnlockOptions): Promise<Unlocked> {
    return this.km.unlock(meta, opts);
  }

  /**
   * Every keyslot (listKeyslots order); one a binding token names is `bound`: its rebind() wraps a
   * fresh secret (the caller wipes it) under the newest version of the same KEK, the token keeping the
   * stored KEK name exactly. Throws CORRUPT_HEADER on a malformed token.
   */
  keyslots(meta: Luks2Metadata): KeyslotMove[] {
    const bound = new Map(bindings(meta).map((b) => [b.keyslot, b]));
    return listKeyslots(meta).map((e): KeyslotMove => {
      const b = bound.get(e.slot);
      if (b === undefined) return { slot: e.slot, kind: e.kind === 'recovery' ? 'recovery' : 'passphrase' };
      return {
        slot: e.slot,
        kind: 'bound',
        rebind: async (): Promise<NewKeyslot> => {
          const nb = await this.km.newBinding(this.km.effectiveUri(b.kek));
          nb.token.atrest_kek = b.kek; // keep the stored URI exactly
          return { passphrase: nb.secret, kdf: BOUND_KEYSLOT_KDF, token: nb.token };
        },
      };
    });
  }

  /** A new recovery passphrase; the caller wipes it. */
  recoveryPassphrase(): Buffer {
    return generateRecoveryPassphrase();
  }

  /** A recovery keyslot's token (its `keyslots` filled in when it is written). */
  recoveryToken(): JsonObject {
    return { type: TOKEN_RECOVERY, keyslots: [], atrest_created: new Date().toISOString() };
  }

  rotated(volume: string, uuid: string, reason: string): void {
    this.km.auditEvent(keyEvent('rotate', { volume, uuid, reason }));
  }
}

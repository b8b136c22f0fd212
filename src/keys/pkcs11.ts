// A KEK provider backed by a PKCS#11 token (an HSM, or SoftHSM2 in tests). The KEK never leaves the
// token: wrap and unwrap are CKM_AES_GCM C_Encrypt/C_Decrypt calls inside it.
//
// Mechanism: AES-256-GCM with a random 12-byte IV generated here and stored in the blob. Chosen over
// CKM_AES_KEY_WRAP_PAD because the latter needs the secret imported as an extractable session key
// object and, on unwrap, a non-sensitive extractable object whose CKA_VALUE we read back; GCM gives
// authenticated encryption of the 32 bytes directly and SoftHSM2 2.6 supports it.
//
// Blob: "A11G" | 0x01 | iv (12) | ciphertext | tag (16). AAD: "atrest-pkcs11-kek:" + key label, so a
// blob made under one version does not decrypt under another label (WRONG_KEY).
//
// Versions: object label `NAME` is version 1, `NAME.v2`, `NAME.v3`, ... are later versions (all
// CKO_SECRET_KEY / CKK_AES). `current()` picks the highest version present.
//
// Revocation: a key is unavailable when its object is gone or its CKA_DECRYPT or CKA_UNWRAP is false.
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import pkcs11js from 'pkcs11js';
import { AtrestError } from '../errors/index.js';
import type { KekProvider, KekRef } from './kek.js';
import { checkTrusted } from './trusted-file.js';
import { parsePkcs11Uri, redactPkcs11Uri, stripPkcs11Query, type Pkcs11Uri } from './pkcs11-uri.js';

const MAGIC = Buffer.from('A11G', 'latin1');
const FORMAT = 1;
const IV_LEN = 12;
const TAG_LEN = 16;
const HEADER_LEN = MAGIC.length + 1 + IV_LEN;

/** CKR_* codes we translate. */
const CKR_PIN_INCORRECT = 0xa0;
const CKR_PIN_INVALID = 0xa1;
const CKR_PIN_LEN_RANGE = 0xa2;
const CKR_USER_ALREADY_LOGGED_IN = 0x100;
const CKR_OBJECT_HANDLE_INVALID = 0x82;
const CKR_KEY_HANDLE_INVALID = 0x60;
const CKR_KEY_FUNCTION_NOT_PERMITTED = 0x68;
const CKR_ENCRYPTED_DATA_INVALID = 0x40;
const CKR_ENCRYPTED_DATA_LEN_RANGE = 0x41;
const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;
/** Codes after which a cached session or slot is stale (token removed, re-inserted, re-initialised). */
const CKR_STALE = new Set([
  0x03, // CKR_SLOT_ID_INVALID
  0x30, // CKR_DEVICE_ERROR
  0x32, // CKR_DEVICE_REMOVED
  0xb0, // CKR_SESSION_CLOSED
  0xb3, // CKR_SESSION_HANDLE_INVALID
  0xe0, // CKR_TOKEN_NOT_PRESENT
  0x101, // CKR_USER_NOT_LOGGED_IN
]);

/** Whether err (or the PKCS#11 error it wraps) says the cached session is no longer usable. */
function staleSession(err: unknown): boolean {
  const direct = ckrOf(err);
  if (direct !== undefined) return CKR_STALE.has(direct);
  const cause = (err as { cause?: unknown } | null)?.cause;
  const inner = ckrOf(cause);
  return inner !== undefined && CKR_STALE.has(inner);
}

function ckrOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** Parses a label into base name and version (`kek-1` -> v1, `kek-1.v3` -> v3). */
export function versionOfLabel(base: string, label: string): number | undefined {
  if (label === base) return 1;
  if (!label.startsWith(`${base}.v`)) return undefined;
  const v = label.slice(base.length + 2);
  if (!/^[1-9][0-9]{0,8}$/.test(v)) return undefined;
  return Number(v);
}

/** The object label of `version` of key `base`. */
export function labelOfVersion(base: string, version: number): string {
  return version === 1 ? base : `${base}.v${version}`;
}

interface Open {
  pkcs11: pkcs11js.PKCS11;
  modulePath: string;
  ownsInit: boolean;
  slots: Map<string, pkcs11js.Handle>; // token label -> slot
  sessions: Map<string, pkcs11js.Handle>; // `${modulePath}\0${token}` -> logged-in session
}

/** Options for tests and embedding. */
export interface Pkcs11ProviderOptions {
  /** Used when the URI has no module-path. */
  defaultModulePath?: string;
}

export class Pkcs11Provider implements KekProvider {
  readonly scheme = 'pkcs11';
  readonly wrapAlg = 'pkcs11-aes256-gcm';
  private readonly modules = new Map<string, Open>();
  private readonly defaultModulePath: string | undefined;

  constructor(options: Pkcs11ProviderOptions = {}) {
    this.defaultModulePath = options.defaultModulePath;
  }

  current(uri: string): Promise<KekRef> {
    return settle(() => this.reconnecting(uri, () => this.currentSync(uri)));
  }

  private currentSync(uri: string): KekRef {
    const parsed = parsePkcs11Uri(uri);
    const base = this.objectLabel(parsed, uri);
    const session = this.session(parsed, uri);
    const { pkcs11 } = this.module(parsed, uri);
    let best = 0;
    for (const h of findObjects(pkcs11, session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    ])) {
      const label = readLabel(pkcs11, session, h);
      const v = label === undefined ? undefined : versionOfLabel(base, label);
      if (v !== undefined && v > best) best = v;
    }
    if (best === 0) {
      throw new AtrestError(
        'KEY_UNAVAILABLE',
        `key revoked or unavailable: PKCS#11 object ${base} not found on token ${parsed.token ?? '?'}`,
      );
    }
    return { uri, keyId: `${parsed.token ?? ''}/${base}`, version: best };
  }

  wrap(ref: KekRef, secret: Uint8Array): Promise<Buffer> {
    return settle(() => this.reconnecting(ref.uri, () => this.wrapSync(ref, secret)));
  }

  private wrapSync(ref: KekRef, secret: Uint8Array): Buffer {
    const { pkcs11, session, key, label } = this.key(ref);
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
        throw this.unavailable(ref, 'encryption is not permitted', err);
      throw new AtrestError('KEY_UNAVAILABLE', `PKCS#11 wrap with ${label} failed`, { cause: err });
    } finally {
      input.fill(0);
      out.fill(0);
    }
  }

  unwrap(ref: KekRef, wrapped: Uint8Array): Promise<Buffer> {
    return settle(() => this.reconnecting(ref.uri, () => this.unwrapSync(ref, wrapped)));
  }

  private unwrapSync(ref: KekRef, wrapped: Uint8Array): Buffer {
    const blob = Buffer.from(wrapped);
    if (
      blob.length < HEADER_LEN + TAG_LEN ||
      !blob.subarray(0, MAGIC.length).equals(MAGIC) ||
      blob[MAGIC.length] !== FORMAT
    ) {
      throw new AtrestError('WRONG_KEY', 'wrapped key is not a PKCS#11 AES-GCM blob from atrest');
    }
    const { pkcs11, session, key, label } = this.key(ref);
    const iv = blob.subarray(MAGIC.length + 1, HEADER_LEN);
    const ct = blob.subarray(HEADER_LEN);
    const out = Buffer.alloc(ct.length);
    try {
      pkcs11.C_DecryptInit(session, gcm(iv, label), key);
      const pt = pkcs11.C_Decrypt(session, ct, out);
      const result = Buffer.from(pt);
      return result;
    } catch (err) {
      const ckr = ckrOf(err);
      if (ckr === CKR_KEY_FUNCTION_NOT_PERMITTED || ckr === CKR_KEY_HANDLE_INVALID)
        throw this.unavailable(ref, 'decryption is not permitted', err);
      if (ckr === CKR_ENCRYPTED_DATA_INVALID || ckr === CKR_ENCRYPTED_DATA_LEN_RANGE)
        throw new AtrestError('WRONG_KEY', `PKCS#11 KEK ${label} does not unwrap this key`, { cause: err });
      throw new AtrestError('WRONG_KEY', `PKCS#11 unwrap with ${label} failed`, { cause: err });
    } finally {
      out.fill(0);
    }
  }

  available(ref: KekRef): Promise<boolean> {
    return settle(() => this.reconnecting(ref.uri, () => this.availableSync(ref)));
  }

  private availableSync(ref: KekRef): boolean {
    try {
      this.key(ref);
      return true;
    } catch (err) {
      if (err instanceof AtrestError && err.code === 'KEY_UNAVAILABLE') return false;
      throw err;
    }
  }

  /** Closes every session and finalizes every loaded module. */
  close(): void {
    for (const m of this.modules.values()) {
      for (const s of m.sessions.values()) {
        try {
          m.pkcs11.C_CloseSession(s);
        } catch {
          // already closed
        }
      }
      if (m.ownsInit) {
        try {
          m.pkcs11.C_Finalize();
        } catch {
          // already finalized
        }
      }
      try {
        m.pkcs11.close();
      } catch {
        // nothing to unload
      }
    }
    this.modules.clear();
  }

  // --- internals -------------------------------------------------------------------------------

  /**
   * Runs fn; when it fails because the cached session or slot went stale (the token was removed,
   * re-inserted or re-initialised), drops the cache for that module and tries once more.
   */
  private reconnecting<T>(uri: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (!staleSession(err)) throw err;
      let modulePath: string | undefined;
      try {
        modulePath = parsePkcs11Uri(uri).modulePath ?? this.defaultModulePath;
      } catch {
        throw err;
      }
      const m = modulePath === undefined ? undefined : this.modules.get(modulePath);
      if (m === undefined) throw err;
      for (const session of m.sessions.values()) {
        try {
          m.pkcs11.C_CloseSession(session);
        } catch {
          // already gone
        }
      }
      m.sessions.clear();
      m.slots.clear();
      return fn();
    }
  }

  private objectLabel(parsed: Pkcs11Uri, uri: string): string {
    if (parsed.object === undefined || parsed.object === '')
      throw new AtrestError('USAGE', `PKCS#11 URI ${redactPkcs11Uri(uri)} names no object`, {
        hint: 'add ;object=LABEL to the URI',
      });
    return parsed.object;
  }

  private module(parsed: Pkcs11Uri, uri: string): Open {
    const modulePath = parsed.modulePath ?? this.defaultModulePath;
    if (modulePath === undefined)
      throw new AtrestError('USAGE', `PKCS#11 URI ${redactPkcs11Uri(uri)} has no module-path`, {
        hint: 'add ?module-path=/path/to/pkcs11-module.so',
      });
    const existing = this.modules.get(modulePath);
    if (existing) return existing;
    // root loads this library: refuse one that someone other than root may change
    let st;
    try {
      st = statSync(modulePath);
    } catch {
      st = null; // missing: load() says so below
    }
    if (st !== null) checkTrusted(modulePath, st, 'PKCS#11 module');
    const pkcs11 = new pkcs11js.PKCS11();
    try {
      pkcs11.load(modulePath);
    } catch (err) {
      throw new AtrestError('KEY_UNAVAILABLE', `cannot load PKCS#11 module ${modulePath}`, {
        path: modulePath,
        hint: 'check the "module" of this provider in providers.json',
        cause: err,
      });
    }
    let ownsInit = true;
    try {
      pkcs11.C_Initialize();
    } catch (err) {
      if (ckrOf(err) === CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        ownsInit = false; // another user in this process initialized it; leave finalizing to it
      } else {
        try {
          pkcs11.close();
        } catch {
          // ignore
        }
        throw new AtrestError('KEY_UNAVAILABLE', `cannot initialize PKCS#11 module ${modulePath}`, {
          path: modulePath,
          cause: err,
        });
      }
    }
    const open: Open = { pkcs11, modulePath, ownsInit, slots: new Map(), sessions: new Map() };
    this.modules.set(modulePath, open);
    return open;
  }

  private slot(m: Open, token: string): pkcs11js.Handle {
    const cached = m.slots.get(token);
    if (cached) return cached;
    for (const slot of m.pkcs11.C_GetSlotList(true)) {
      const label = m.pkcs11.C_GetTokenInfo(slot).label.replace(/[\s\0]+$/, '');
      if (label === token) {
        m.slots.set(token, slot);
        return slot;
      }
    }
    throw new AtrestError('KEY_UNAVAILABLE', `key revoked or unavailable: PKCS#11 token ${token} not found`, {
      hint: `check that the token is present in ${m.modulePath}`,
    });
  }

  private session(parsed: Pkcs11Uri, uri: string): pkcs11js.Handle {
    const m = this.module(parsed, uri);
    if (parsed.token === undefined)
      throw new AtrestError('USAGE', `PKCS#11 URI ${redactPkcs11Uri(uri)} names no token`, {
        hint: 'add token=LABEL to the URI',
      });
    const key = `${parsed.token}`;
    const cached = m.sessions.get(key);
    if (cached) return cached;
    const slot = this.slot(m, parsed.token);
    const session = m.pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    const pin = readPin(parsed);
    try {
      if (pin !== undefined) m.pkcs11.C_Login(session, pkcs11js.CKU_USER, pin.toString('utf8'));
    } catch (err) {
      const ckr = ckrOf(err);
      if (ckr !== CKR_USER_ALREADY_LOGGED_IN) {
        try {
          m.pkcs11.C_CloseSession(session);
        } catch {
          // ignore
        }
        if (ckr === CKR_PIN_INCORRECT || ckr === CKR_PIN_INVALID || ckr === CKR_PIN_LEN_RANGE)
          throw new AtrestError('WRONG_KEY', 'PKCS#11 login failed: wrong PIN', {
            hint: `check the PIN for token ${parsed.token}`,
          });
        throw new AtrestError('KEY_UNAVAILABLE', `PKCS#11 login to token ${parsed.token} failed`, {
          cause: err,
        });
      }
    } finally {
      pin?.fill(0);
    }
    m.sessions.set(key, session);
    return session;
  }

  private unavailable(ref: KekRef, why: string, cause?: unknown): AtrestError {
    return new AtrestError(
      'KEY_UNAVAILABLE',
      `key revoked or unavailable: PKCS#11 KEK ${ref.keyId} v${ref.version} ${why}`,
      cause === undefined ? {} : { cause },
    );
  }

  /** Finds the key object of `ref` and checks that it may still decrypt and unwrap. */
  private key(ref: KekRef): {
    pkcs11: pkcs11js.PKCS11;
    session: pkcs11js.Handle;
    key: pkcs11js.Handle;
    label: string;
  } {
    const parsed = parsePkcs11Uri(ref.uri);
    const base = this.objectLabel(parsed, ref.uri);
    const label = labelOfVersion(base, ref.version);
    const session = this.session(parsed, ref.uri);
    const { pkcs11 } = this.module(parsed, ref.uri);
    const found = findObjects(pkcs11, session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    const key = found[0];
    if (key === undefined) throw this.unavailable(ref, `(object ${label}) not found`);
    if (found.length > 1)
      throw new AtrestError('USAGE', `PKCS#11 token holds ${found.length} objects labelled ${label}`, {
        hint: 'give each KEK version a unique label',
      });
    let attrs: pkcs11js.TemplateResult;
    try {
      attrs = pkcs11.C_GetAttributeValue(session, key, [
        { type: pkcs11js.CKA_DECRYPT },
        { type: pkcs11js.CKA_UNWRAP },
        { type: pkcs11js.CKA_KEY_TYPE },
      ]);
    } catch (err) {
      const ckr = ckrOf(err);
      if (ckr === CKR_OBJECT_HANDLE_INVALID) throw this.unavailable(ref, `(object ${label}) not found`, err);
      throw err;
    }
    const flag = (t: number): boolean => {
      const v = attrs.find((a) => a.type === t)?.value;
      return v !== undefined && v.length > 0 && v[0] !== 0;
    };
    if (!flag(pkcs11js.CKA_DECRYPT) || !flag(pkcs11js.CKA_UNWRAP))
      throw this.unavailable(ref, `(object ${label}) has decrypt/unwrap disabled`);
    const kt = attrs.find((a) => a.type === pkcs11js.CKA_KEY_TYPE)?.value;
    if (kt === undefined || kt.length === 0 || readUlong(kt) !== pkcs11js.CKK_AES)
      throw new AtrestError('USAGE', `PKCS#11 object ${label} is not an AES key`);
    return { pkcs11, session, key, label };
  }
}

/** Runs a synchronous PKCS#11 call sequence, turning a throw into a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
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

function readUlong(b: Buffer): number {
  return b.length >= 8 ? Number(b.readBigUInt64LE(0)) : b.readUInt32LE(0);
}

function readLabel(
  pkcs11: pkcs11js.PKCS11,
  session: pkcs11js.Handle,
  h: pkcs11js.Handle,
): string | undefined {
  try {
    const [a] = pkcs11.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_LABEL }]);
    return a?.value.toString('utf8');
  } catch {
    return undefined;
  }
}

function findObjects(
  pkcs11: pkcs11js.PKCS11,
  session: pkcs11js.Handle,
  template: pkcs11js.Template,
): pkcs11js.Handle[] {
  pkcs11.C_FindObjectsInit(session, template);
  try {
    const out: pkcs11js.Handle[] = [];
    for (;;) {
      const batch = pkcs11.C_FindObjects(session, 64);
      if (batch.length === 0) break;
      out.push(...batch);
    }
    return out;
  } finally {
    pkcs11.C_FindObjectsFinal(session);
  }
}

/** The PIN from pin-value or pin-source, as a Buffer the caller wipes. */
function readPin(parsed: Pkcs11Uri): Buffer | undefined {
  if (parsed.pinValue !== undefined) return Buffer.from(parsed.pinValue, 'utf8');
  if (parsed.pinSource !== undefined) {
    const path = parsed.pinSource.startsWith('file:') ? new URL(parsed.pinSource).pathname : parsed.pinSource;
    let raw: Buffer;
    try {
      raw = readFileSync(path);
    } catch (err) {
      throw new AtrestError('USAGE', `cannot read PKCS#11 pin-source ${path}`, { path, cause: err });
    }
    let end = raw.length;
    while (end > 0 && (raw[end - 1] === 0x0a || raw[end - 1] === 0x0d)) end--;
    const pin = Buffer.from(raw.subarray(0, end));
    raw.fill(0);
    return pin;
  }
  return undefined;
}

/** The KEK URI for display: PIN redacted. Re-exported for callers that only import this module. */
export { redactPkcs11Uri, stripPkcs11Query };

export type { KekProvider, KekRef };

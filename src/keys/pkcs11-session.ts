// PKCS#11 sessions: loading a (trusted) module once, finding a token's slot, opening and logging in a session, kept.
import { readFileSync, statSync } from 'node:fs';
import pkcs11js from 'pkcs11js';
import { AtrestError } from '../errors/index.js';
import {
  CKR_CRYPTOKI_ALREADY_INITIALIZED,
  CKR_PIN_INCORRECT,
  CKR_PIN_INVALID,
  CKR_PIN_LEN_RANGE,
  CKR_USER_ALREADY_LOGGED_IN,
  ckrOf,
  staleSession,
} from './pkcs11-errors.js';
import { parsePkcs11Uri, redactPkcs11Uri, type Pkcs11Uri } from './pkcs11-uri.js';
import { checkTrusted } from './trusted-file.js';

/** A loaded module with its cached slots and logged-in sessions. */
export interface Open {
  pkcs11: pkcs11js.PKCS11;
  modulePath: string;
  ownsInit: boolean;
  slots: Map<string, pkcs11js.Handle>; // token label -> slot
  sessions: Map<string, pkcs11js.Handle>; // `${modulePath}\0${token}` -> logged-in session
}

/** The modules one provider loaded, by path, each with its sessions; all closed by close(). */
export class Pkcs11Sessions {
  private readonly modules = new Map<string, Open>();

  /** `defaultModulePath`: used when the URI has no module-path. */
  constructor(private readonly defaultModulePath: string | undefined) {}

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

  /**
   * Runs fn; when it fails because the cached session or slot went stale (the token was removed,
   * re-inserted or re-initialised), drops the cache for that module and tries once more.
   */
  reconnecting<T>(uri: string, fn: () => T): T {
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

  /** The module of the URI, loaded and initialized on first use (root loads it: it must be root's). */
  module(parsed: Pkcs11Uri, uri: string): Open {
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

  /** The logged-in session on the URI's token (opened and logged in with its PIN on first use). */
  session(parsed: Pkcs11Uri, uri: string): pkcs11js.Handle {
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

// A private SoftHSM2 token for tests: its own config and token directory in a temp dir.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';

export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';
export const TOKEN_LABEL = 'atrest';
export const USER_PIN = '1234';
export const SO_PIN = '5678';

export interface SoftHsm {
  dir: string;
  modulePath: string;
  /** A pkcs11js handle with a logged-in RW session on the token, for test manipulation. */
  pkcs11: pkcs11js.PKCS11;
  session: pkcs11js.Handle;
  /** Generates a token AES-256 key (non-extractable, sensitive) with this label. */
  generateAesKey(label: string): pkcs11js.Handle;
  findKey(label: string): pkcs11js.Handle | undefined;
  destroy(label: string): void;
  setFlags(label: string, flags: { decrypt?: boolean; unwrap?: boolean }): void;
  /** Ends the process-wide login (after every provider session is closed). */
  logout(): void;
  cleanup(): void;
}

/** Creates the token; sets SOFTHSM2_CONF for this process (before any module load). */
export function createSoftHsm(): SoftHsm {
  const dir = mkdtempSync(join(tmpdir(), 'atrest-softhsm-'));
  const tokens = join(dir, 'tokens');
  mkdirSync(tokens, { mode: 0o700 });
  const conf = join(dir, 'softhsm2.conf');
  writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`);
  process.env['SOFTHSM2_CONF'] = conf;
  execFileSync(
    'softhsm2-util',
    ['--init-token', '--free', '--label', TOKEN_LABEL, '--pin', USER_PIN, '--so-pin', SO_PIN],
    { env: { ...process.env, SOFTHSM2_CONF: conf }, stdio: 'pipe' },
  );
  const pkcs11 = new pkcs11js.PKCS11();
  pkcs11.load(SOFTHSM_MODULE);
  pkcs11.C_Initialize();
  const slot = pkcs11.C_GetSlotList(true).find((s) => pkcs11.C_GetTokenInfo(s).label.trim() === TOKEN_LABEL);
  if (slot === undefined) throw new Error('SoftHSM token not found after init');
  const session = pkcs11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
  // Log in only around each manipulation: login state is shared by every session of the process,
  // and the provider under test must do its own login (and fail it on a wrong PIN).
  const withLogin = <T>(fn: () => T): T => {
    let mine = true;
    try {
      pkcs11.C_Login(session, pkcs11js.CKU_USER, USER_PIN);
    } catch (err) {
      if ((err as { code?: unknown }).code !== 0x100) throw err; // CKR_USER_ALREADY_LOGGED_IN
      mine = false;
    }
    try {
      return fn();
    } finally {
      if (mine) pkcs11.C_Logout(session);
    }
  };

  const findKey = (label: string): pkcs11js.Handle | undefined => {
    pkcs11.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_LABEL, value: label },
    ]);
    const h = pkcs11.C_FindObjects(session);
    pkcs11.C_FindObjectsFinal(session);
    return h ?? undefined;
  };
  return {
    dir,
    modulePath: SOFTHSM_MODULE,
    pkcs11,
    session,
    findKey: (label: string) => withLogin(() => findKey(label)),
    generateAesKey(label: string): pkcs11js.Handle {
      return withLogin(() =>
        pkcs11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
          { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
          { type: pkcs11js.CKA_LABEL, value: label },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: true },
          { type: pkcs11js.CKA_EXTRACTABLE, value: false },
          { type: pkcs11js.CKA_ENCRYPT, value: true },
          { type: pkcs11js.CKA_DECRYPT, value: true },
          { type: pkcs11js.CKA_WRAP, value: true },
          { type: pkcs11js.CKA_UNWRAP, value: true },
        ]),
      );
    },
    destroy(label: string): void {
      withLogin(() => {
        const h = findKey(label);
        if (h !== undefined) pkcs11.C_DestroyObject(session, h);
      });
    },
    setFlags(label: string, flags: { decrypt?: boolean; unwrap?: boolean }): void {
      withLogin(() => {
        const h = findKey(label);
        if (h === undefined) throw new Error(`no key ${label}`);
        const t: pkcs11js.Template = [];
        if (flags.decrypt !== undefined) t.push({ type: pkcs11js.CKA_DECRYPT, value: flags.decrypt });
        if (flags.unwrap !== undefined) t.push({ type: pkcs11js.CKA_UNWRAP, value: flags.unwrap });
        pkcs11.C_SetAttributeValue(session, h, t);
      });
    },
    logout(): void {
      try {
        pkcs11.C_Logout(session);
      } catch {
        // not logged in
      }
    },
    cleanup(): void {
      try {
        pkcs11.C_CloseSession(session);
        pkcs11.C_Finalize();
      } catch {
        // ignore
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

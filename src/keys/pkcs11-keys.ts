// PKCS#11 KEK lookup: version labels (NAME, NAME.v2, ...), the newest version on a token, a version's key object checked.
import pkcs11js from 'pkcs11js';
import { AtrestError } from '../errors/index.js';
import type { KekRef } from './kek.js';
import { CKR_OBJECT_HANDLE_INVALID, ckrOf } from './pkcs11-errors.js';
import type { Pkcs11Sessions } from './pkcs11-session.js';
import { parsePkcs11Uri, redactPkcs11Uri, type Pkcs11Uri } from './pkcs11-uri.js';

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

/** The key object of one KEK version, in the session that found it. */
export interface KeyHandle {
  pkcs11: pkcs11js.PKCS11;
  session: pkcs11js.Handle;
  key: pkcs11js.Handle;
  label: string;
}

/** The URI's object label (the KEK's base name); USAGE when it names none. */
export function objectLabel(parsed: Pkcs11Uri, uri: string): string {
  if (parsed.object === undefined || parsed.object === '')
    throw new AtrestError('USAGE', `PKCS#11 URI ${redactPkcs11Uri(uri)} names no object`, {
      hint: 'add ;object=LABEL to the URI',
    });
  return parsed.object;
}

/** KEY_UNAVAILABLE for a KEK version that is gone or may no longer decrypt (revoked). */
export function unavailable(ref: KekRef, why: string, cause?: unknown): AtrestError {
  return new AtrestError(
    'KEY_UNAVAILABLE',
    `key revoked or unavailable: PKCS#11 KEK ${ref.keyId} v${ref.version} ${why}`,
    cause === undefined ? {} : { cause },
  );
}

/** The newest version of the URI's KEK on its token: the highest version label present. */
export function newestKek(sessions: Pkcs11Sessions, uri: string): KekRef {
  const parsed = parsePkcs11Uri(uri);
  const base = objectLabel(parsed, uri);
  const session = sessions.session(parsed, uri);
  const { pkcs11 } = sessions.module(parsed, uri);
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

/** Finds the key object of `ref` and checks that it may still decrypt and unwrap. */
export function findKey(sessions: Pkcs11Sessions, ref: KekRef): KeyHandle {
  const parsed = parsePkcs11Uri(ref.uri);
  const base = objectLabel(parsed, ref.uri);
  const label = labelOfVersion(base, ref.version);
  const session = sessions.session(parsed, ref.uri);
  const { pkcs11 } = sessions.module(parsed, ref.uri);
  const found = findObjects(pkcs11, session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  const key = found[0];
  if (key === undefined) throw unavailable(ref, `(object ${label}) not found`);
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
    if (ckr === CKR_OBJECT_HANDLE_INVALID) throw unavailable(ref, `(object ${label}) not found`, err);
    throw err;
  }
  const flag = (t: number): boolean => {
    const v = attrs.find((a) => a.type === t)?.value;
    return v !== undefined && v.length > 0 && v[0] !== 0;
  };
  if (!flag(pkcs11js.CKA_DECRYPT) || !flag(pkcs11js.CKA_UNWRAP))
    throw unavailable(ref, `(object ${label}) has decrypt/unwrap disabled`);
  const kt = attrs.find((a) => a.type === pkcs11js.CKA_KEY_TYPE)?.value;
  if (kt === undefined || kt.length === 0 || readUlong(kt) !== pkcs11js.CKK_AES)
    throw new AtrestError('USAGE', `PKCS#11 object ${label} is not an AES key`);
  return { pkcs11, session, key, label };
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

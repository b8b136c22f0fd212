// PKCS#11 return codes (CKR_*) atrest translates, and which of them mean a cached session or slot went stale.

export const CKR_PIN_INCORRECT = 0xa0;
export const CKR_PIN_INVALID = 0xa1;
export const CKR_PIN_LEN_RANGE = 0xa2;
export const CKR_USER_ALREADY_LOGGED_IN = 0x100;
export const CKR_OBJECT_HANDLE_INVALID = 0x82;
export const CKR_KEY_HANDLE_INVALID = 0x60;
export const CKR_KEY_FUNCTION_NOT_PERMITTED = 0x68;
export const CKR_ENCRYPTED_DATA_INVALID = 0x40;
export const CKR_ENCRYPTED_DATA_LEN_RANGE = 0x41;
export const CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191;
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
export function staleSession(err: unknown): boolean {
  const direct = ckrOf(err);
  if (direct !== undefined) return CKR_STALE.has(direct);
  const cause = (err as { cause?: unknown } | null)?.cause;
  const inner = ckrOf(cause);
  return inner !== undefined && CKR_STALE.has(inner);
}

/** The CKR_* code of a pkcs11js error, if it is one. */
export function ckrOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

// KMIP 1.4 request messages the client sends and the reading of their responses (batch of one item each).
// Field order follows the specification (pykmip-server reads fields in that order and rejects others).
import { AtrestError, type ErrorCode } from '../../errors/index.js';
import {
  BlockCipherMode,
  CryptographicAlgorithm,
  NameType,
  ObjectType,
  Operation,
  ResultReason,
  ResultStatus,
  RevocationReasonCode,
  State,
  Tag,
  UsageMask,
} from './tags.js';
import {
  bytes,
  children,
  dateTime,
  encodeTtlv,
  enumeration,
  field,
  int,
  optionalField,
  struct,
  text,
  type Ttlv,
  type TtlvStructure,
} from './ttlv.js';

/** Protocol version we speak: 1.4 is the first with the AES-GCM tag fields (Tag Length, Authenticated
 * Encryption Tag) in Encrypt/Decrypt. */
export const PROTOCOL_MAJOR = 1;
export const PROTOCOL_MINOR = 4;
/** The Application Specific Information namespace carrying atrest's key version (see client.ts). */
export const VERSION_NAMESPACE = 'x-atrest-version';
export const GCM_TAG_BYTES = 16;
export const GCM_IV_BYTES = 12;

export type KmipState =
  'pre-active' | 'active' | 'deactivated' | 'compromised' | 'destroyed' | 'destroyed-compromised';

const STATE_NAMES: Record<number, KmipState> = {
  [State.PreActive]: 'pre-active',
  [State.Active]: 'active',
  [State.Deactivated]: 'deactivated',
  [State.Compromised]: 'compromised',
  [State.Destroyed]: 'destroyed',
  [State.DestroyedCompromised]: 'destroyed-compromised',
};

const OPERATION_NAMES: Record<number, string> = {
  [Operation.Create]: 'Create',
  [Operation.Locate]: 'Locate',
  [Operation.GetAttributes]: 'Get Attributes',
  [Operation.Activate]: 'Activate',
  [Operation.Revoke]: 'Revoke',
  [Operation.Destroy]: 'Destroy',
  [Operation.Encrypt]: 'Encrypt',
  [Operation.Decrypt]: 'Decrypt',
};
export const operationName = (op: number): string => OPERATION_NAMES[op] ?? `operation ${op}`;

/** A whole request message for one operation. */
export function requestMessage(operation: number, payload: Ttlv[]): Buffer {
  return encodeTtlv(
    struct(
      Tag.RequestMessage,
      struct(
        Tag.RequestHeader,
        struct(
          Tag.ProtocolVersion,
          int(Tag.ProtocolVersionMajor, PROTOCOL_MAJOR),
          int(Tag.ProtocolVersionMinor, PROTOCOL_MINOR),
        ),
        int(Tag.BatchCount, 1),
      ),
      struct(Tag.BatchItem, enumeration(Tag.Operation, operation), struct(Tag.RequestPayload, ...payload)),
    ),
  );
}

const attribute = (name: string, value: Ttlv): Ttlv =>
  struct(Tag.Attribute, text(Tag.AttributeName, name), { ...value, tag: Tag.AttributeValue });

const nameValue = (name: string): Ttlv =>
  struct(0, text(Tag.NameValue, name), enumeration(Tag.NameType, NameType.UninterpretedTextString));

const gcmParameters = (): Ttlv =>
  struct(
    Tag.CryptographicParameters,
    enumeration(Tag.BlockCipherMode, BlockCipherMode.GCM),
    enumeration(Tag.CryptographicAlgorithm, CryptographicAlgorithm.AES),
    int(Tag.TagLength, GCM_TAG_BYTES),
  );

export function createPayload(name: string, version: number): Ttlv[] {
  return [
    enumeration(Tag.ObjectType, ObjectType.SymmetricKey),
    struct(
      Tag.TemplateAttribute,
      attribute('Cryptographic Algorithm', enumeration(0, CryptographicAlgorithm.AES)),
      attribute('Cryptographic Length', int(0, 256)),
      attribute('Cryptographic Usage Mask', int(0, UsageMask.Encrypt | UsageMask.Decrypt)),
      attribute('Name', nameValue(name)),
      attribute(
        'Application Specific Information',
        struct(
          0,
          text(Tag.ApplicationNamespace, VERSION_NAMESPACE),
          text(Tag.ApplicationData, String(version)),
        ),
      ),
    ),
  ];
}

export const uidPayload = (uid: string): Ttlv[] => [text(Tag.UniqueIdentifier, uid)];

export const locatePayload = (name: string): Ttlv[] => [attribute('Name', nameValue(name))];

export const getAttributesPayload = (uid: string): Ttlv[] => [
  text(Tag.UniqueIdentifier, uid),
  text(Tag.AttributeName, 'State'),
  text(Tag.AttributeName, 'Name'),
  text(Tag.AttributeName, 'Application Specific Information'),
];

export const encryptPayload = (uid: string, data: Uint8Array, iv: Uint8Array): Ttlv[] => [
  text(Tag.UniqueIdentifier, uid),
  gcmParameters(),
  bytes(Tag.Data, data),
  bytes(Tag.IvCounterNonce, iv),
];

export const decryptPayload = (uid: string, data: Uint8Array, iv: Uint8Array, tag: Uint8Array): Ttlv[] => [
  text(Tag.UniqueIdentifier, uid),
  gcmParameters(),
  bytes(Tag.Data, data),
  bytes(Tag.IvCounterNonce, iv),
  bytes(Tag.AuthenticatedEncryptionTag, tag),
];

export function revokePayload(
  uid: string,
  reason: 'key-compromise' | 'cessation-of-operation',
  now: Date,
): Ttlv[] {
  const code =
    reason === 'key-compromise'
      ? RevocationReasonCode.KeyCompromise
      : RevocationReasonCode.CessationOfOperation;
  const out: Ttlv[] = [
    text(Tag.UniqueIdentifier, uid),
    struct(Tag.RevocationReason, enumeration(Tag.RevocationReasonCode, code)),
  ];
  // The spec requires the Compromise Occurrence Date with reason Key Compromise.
  if (reason === 'key-compromise')
    out.push(dateTime(Tag.CompromiseOccurrenceDate, BigInt(Math.floor(now.getTime() / 1000))));
  return out;
}

/** What a KMIP failure result means for atrest. */
export function failureCode(reason: number | undefined): ErrorCode {
  switch (reason) {
    case ResultReason.ItemNotFound:
    case ResultReason.PermissionDenied:
    case ResultReason.IllegalOperation:
    case ResultReason.ObjectArchived:
    case ResultReason.KeyValueNotPresent:
      return 'KEY_UNAVAILABLE';
    case ResultReason.AuthenticationNotSuccessful:
      return 'KEY_SERVER_REFUSED';
    case ResultReason.CryptographicFailure:
      return 'WRONG_KEY';
    default:
      return 'KEY_SERVER_ERROR';
  }
}

const REASON_TEXT: Record<number, string> = Object.fromEntries(
  Object.entries(ResultReason).map(([k, v]) => [v, k.replace(/([a-z])([A-Z])/g, '$1 $2')]),
);

/**
 * The response payload of a one-item response to `operation`, or the AtrestError its failure result means.
 * `where` names the server (host:port) and `what` the object, for messages.
 */
export function responsePayload(msg: Ttlv, operation: number, where: string, what: string): TtlvStructure {
  const bad = (m: string): AtrestError =>
    new AtrestError('KEY_SERVER_ERROR', `key server ${where} sent an unexpected KMIP response: ${m}`, {
      hint: 'check that the address is a KMIP 1.4 server',
    });
  if (msg.tag !== Tag.ResponseMessage || msg.type !== 'structure') throw bad('not a Response Message');
  const items = children(msg, Tag.BatchItem);
  if (items.length !== 1 || items[0]!.type !== 'structure')
    throw bad(`${items.length} batch items, expected 1`);
  const item = items[0];
  const op = optionalField(item, Tag.Operation, 'enum', 'Operation');
  const status = field(item, Tag.ResultStatus, 'enum', 'Result Status');
  if (status !== ResultStatus.Success) {
    const reason = optionalField(item, Tag.ResultReason, 'enum', 'Result Reason');
    const text = optionalField(item, Tag.ResultMessage, 'text', 'Result Message');
    const code = failureCode(reason);
    const reasonText = reason === undefined ? 'no reason given' : (REASON_TEXT[reason] ?? `reason ${reason}`);
    // The server's Result Message is shown trimmed to one line; it never holds key material.
    const detail = text ? `: ${text.replace(/\s+/g, ' ').slice(0, 200)}` : '';
    const subject = `KMIP ${operationName(operation)} of ${what} on key server ${where} failed (${reasonText}${detail})`;
    const hints: Partial<Record<ErrorCode, string>> = {
      KEY_UNAVAILABLE:
        "the key is revoked, destroyed, not active or not this client's on the key server; use a recovery key, or restore the key on the server",
      KEY_SERVER_REFUSED:
        "the key server refused this host's client certificate; check it is signed by the CA the server trusts and has extendedKeyUsage clientAuth",
      WRONG_KEY: 'the wrapped secret does not decrypt with this key (another key, or a damaged token)',
    };
    throw new AtrestError(code, subject, { hint: hints[code] ?? "see the key server's log" });
  }
  if (op !== undefined && op !== operation)
    throw bad(`answer to ${operationName(op)}, not ${operationName(operation)}`);
  const payload = optionalField(item, Tag.ResponsePayload, 'structure', 'Response Payload');
  return { tag: Tag.ResponsePayload, type: 'structure', value: payload ?? [] };
}

/** The state name for a KMIP State value. */
export function stateName(v: number, where: string): KmipState {
  const s = STATE_NAMES[v];
  if (s === undefined)
    throw new AtrestError('KEY_SERVER_ERROR', `key server ${where} reported an unknown key state ${v}`, {
      hint: 'check that the address is a KMIP 1.4 server',
    });
  return s;
}

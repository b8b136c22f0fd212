// KMIP TTLV codec (OASIS KMIP Specification v1.4, 9.1 "TTLV Encoding"): tag (3 bytes), type (1), length (4,
// big-endian), value padded with zeros to a multiple of 8. Decoding is strict because a key server's response
// is untrusted input: every length, padding byte, nesting level and the total size are checked, and anything
// malformed is an AtrestError('KEY_SERVER_ERROR'), never an exception from a Buffer read or a hang.
import { AtrestError } from '../../errors/index.js';
import { ItemType } from './tags.js';

interface Base<T extends string, V> {
  tag: number;
  type: T;
  value: V;
}
export type TtlvStructure = Base<'structure', Ttlv[]>;
export type Ttlv =
  | TtlvStructure
  | Base<'integer', number>
  | Base<'long', bigint>
  | Base<'bigint', bigint>
  | Base<'enum', number>
  | Base<'bool', boolean>
  | Base<'text', string>
  | Base<'bytes', Buffer>
  /** Seconds since the Unix epoch. */
  | Base<'datetime', bigint>
  /** Seconds. */
  | Base<'interval', number>;
export type TtlvType = Ttlv['type'];

/** Largest message the decoder accepts (a key server's answers to our requests are a few hundred bytes). */
export const MAX_MESSAGE_BYTES = 1 << 20;
/** Deepest nesting the decoder accepts (a KMIP 1.x response nests about 6 levels). */
export const MAX_DEPTH = 16;
const HEADER = 8;

const TYPE_CODE: Record<TtlvType, number> = {
  structure: ItemType.Structure,
  integer: ItemType.Integer,
  long: ItemType.LongInteger,
  bigint: ItemType.BigInteger,
  enum: ItemType.Enumeration,
  bool: ItemType.Boolean,
  text: ItemType.TextString,
  bytes: ItemType.ByteString,
  datetime: ItemType.DateTime,
  interval: ItemType.Interval,
};
const TYPE_NAME = new Map<number, TtlvType>(
  Object.entries(TYPE_CODE).map(([name, code]) => [code, name as TtlvType]),
);

// ---- constructors ----
export const struct = (tag: number, ...value: Ttlv[]): TtlvStructure => ({ tag, type: 'structure', value });
export const int = (tag: number, value: number): Ttlv => ({ tag, type: 'integer', value });
export const long = (tag: number, value: bigint): Ttlv => ({ tag, type: 'long', value });
export const bigInt = (tag: number, value: bigint): Ttlv => ({ tag, type: 'bigint', value });
export const enumeration = (tag: number, value: number): Ttlv => ({ tag, type: 'enum', value });
export const bool = (tag: number, value: boolean): Ttlv => ({ tag, type: 'bool', value });
export const text = (tag: number, value: string): Ttlv => ({ tag, type: 'text', value });
export const bytes = (tag: number, value: Uint8Array): Ttlv => ({
  tag,
  type: 'bytes',
  value: Buffer.from(value.buffer, value.byteOffset, value.byteLength),
});
export const dateTime = (tag: number, seconds: bigint): Ttlv => ({ tag, type: 'datetime', value: seconds });
export const interval = (tag: number, seconds: number): Ttlv => ({ tag, type: 'interval', value: seconds });

// ---- encoding ----

function encodingBug(message: string): AtrestError {
  return new AtrestError('INTERNAL', `KMIP encoding: ${message}`);
}

const pad8 = (n: number): number => (n + 7) & ~7;

/** Two's-complement big-endian bytes of v, sign-extended to a multiple of 8 bytes (at least 8). */
function bigIntBytes(v: bigint): Buffer {
  let len = 8;
  while (v >= 1n << BigInt(len * 8 - 1) || v < -(1n << BigInt(len * 8 - 1))) len += 8;
  const out = Buffer.alloc(len);
  let x = BigInt.asUintN(len * 8, v);
  for (let i = len - 1; i >= 0; i--) {
    out[i] = Number(x & 0xffn);
    x >>= 8n;
  }
  return out;
}

function valueLength(item: Ttlv): number {
  switch (item.type) {
    case 'structure':
      return item.value.reduce((n, child) => n + HEADER + pad8(valueLength(child)), 0);
    case 'integer':
    case 'enum':
    case 'interval':
      return 4;
    case 'long':
    case 'bool':
    case 'datetime':
      return 8;
    case 'bigint':
      return bigIntBytes(item.value).length;
    case 'text':
      return Buffer.byteLength(item.value, 'utf8');
    case 'bytes':
      return item.value.length;
  }
}

function writeItem(item: Ttlv, out: Buffer, at: number): number {
  if (!Number.isInteger(item.tag) || item.tag < 0 || item.tag > 0xffffff)
    throw encodingBug(`tag ${item.tag} is not a 3-byte number`);
  const len = valueLength(item);
  out.writeUIntBE(item.tag, at, 3);
  out[at + 3] = TYPE_CODE[item.type];
  out.writeUInt32BE(len, at + 4);
  const v = at + HEADER;
  switch (item.type) {
    case 'structure': {
      let p = v;
      for (const child of item.value) p = writeItem(child, out, p);
      return p;
    }
    case 'integer':
      if (!Number.isInteger(item.value) || item.value < -0x80000000 || item.value > 0x7fffffff)
        throw encodingBug(`integer ${item.value} out of range`);
      out.writeInt32BE(item.value, v);
      break;
    case 'enum':
    case 'interval':
      if (!Number.isInteger(item.value) || item.value < 0 || item.value > 0xffffffff)
        throw encodingBug(`${item.type} ${item.value} out of range`);
      out.writeUInt32BE(item.value, v);
      break;
    case 'long':
    case 'datetime':
      if (BigInt.asIntN(64, item.value) !== item.value) throw encodingBug(`${item.type} out of range`);
      out.writeBigInt64BE(item.value, v);
      break;
    case 'bool':
      out.writeBigUInt64BE(item.value ? 1n : 0n, v);
      break;
    case 'bigint':
      bigIntBytes(item.value).copy(out, v);
      break;
    case 'text':
      out.write(item.value, v, 'utf8');
      break;
    case 'bytes':
      item.value.copy(out, v);
      break;
  }
  return v + pad8(len);
}

/** The TTLV encoding of item (a fresh Buffer the caller may wipe). */
export function encodeTtlv(item: Ttlv): Buffer {
  const out = Buffer.alloc(HEADER + pad8(valueLength(item)));
  writeItem(item, out, 0);
  return out;
}

// ---- decoding ----

function malformed(message: string, offset: number): AtrestError {
  return new AtrestError(
    'KEY_SERVER_ERROR',
    `malformed KMIP message from the key server: ${message} at byte ${offset}`,
    {
      hint: 'the key server sent something that is not valid KMIP TTLV; check that the address is a KMIP server',
    },
  );
}

function checkTag(buf: Uint8Array, at: number): number {
  const tag = (buf[at]! << 16) | (buf[at + 1]! << 8) | buf[at + 2]!;
  // 42xxxx: tags the standard defines; 54xxxx: the extension range (9.1.3.1).
  if (buf[at] !== 0x42 && buf[at] !== 0x54)
    throw malformed(`tag 0x${tag.toString(16)} outside the KMIP ranges`, at);
  return tag;
}

/**
 * The total size of the message whose first 8 bytes are `header` (8 + its length), after checking that it
 * starts like a KMIP message: a KMIP tag, type Structure, a length that is a multiple of 8 and at most
 * maxBytes. A stream reader calls this as soon as 8 bytes have arrived, before buffering the rest.
 */
export function ttlvMessageLength(header: Uint8Array, maxBytes = MAX_MESSAGE_BYTES): number {
  if (header.length < HEADER) throw malformed(`${header.length}-byte message header`, 0);
  checkTag(header, 0);
  if (header[3] !== ItemType.Structure)
    throw malformed(`message of type 0x${header[3]!.toString(16)}, not a structure`, 3);
  const len = Buffer.from(header.buffer, header.byteOffset, HEADER).readUInt32BE(4);
  if (len % 8 !== 0) throw malformed(`structure length ${len} not a multiple of 8`, 4);
  if (HEADER + len > maxBytes)
    throw malformed(`message of ${HEADER + len} bytes exceeds the ${maxBytes}-byte limit`, 4);
  return HEADER + len;
}

function fixedLength(type: TtlvType, len: number, at: number): void {
  const want = type === 'integer' || type === 'enum' || type === 'interval' ? 4 : 8;
  if (len !== want) throw malformed(`${type} of length ${len} (must be ${want})`, at + 4);
}

function zeros(buf: Buffer, from: number, to: number): void {
  for (let i = from; i < to; i++) if (buf[i] !== 0) throw malformed('non-zero padding', i);
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function readItem(buf: Buffer, at: number, end: number, depth: number): { item: Ttlv; next: number } {
  if (end - at < HEADER) throw malformed(`truncated item header (${end - at} bytes left)`, at);
  const tag = checkTag(buf, at);
  const type = TYPE_NAME.get(buf[at + 3]!);
  if (type === undefined) throw malformed(`unknown item type 0x${buf[at + 3]!.toString(16)}`, at + 3);
  const len = buf.readUInt32BE(at + 4);
  if (type === 'structure' && len % 8 !== 0)
    throw malformed(`structure length ${len} not a multiple of 8`, at + 4);
  const v = at + HEADER;
  const padded = pad8(len);
  if (padded > end - v || len > end - v)
    throw malformed(`item length ${len} runs past the end of its container`, at + 4);
  const next = v + padded;
  switch (type) {
    case 'structure': {
      if (depth >= MAX_DEPTH) throw malformed(`structures nested deeper than ${MAX_DEPTH}`, at);
      const children: Ttlv[] = [];
      let p = v;
      while (p < next) {
        const r = readItem(buf, p, next, depth + 1);
        children.push(r.item);
        p = r.next;
      }
      return { item: { tag, type, value: children }, next };
    }
    case 'integer':
      fixedLength(type, len, at);
      zeros(buf, v + 4, v + 8);
      return { item: { tag, type, value: buf.readInt32BE(v) }, next };
    case 'enum':
    case 'interval':
      fixedLength(type, len, at);
      zeros(buf, v + 4, v + 8);
      return { item: { tag, type, value: buf.readUInt32BE(v) }, next };
    case 'long':
    case 'datetime':
      fixedLength(type, len, at);
      return { item: { tag, type, value: buf.readBigInt64BE(v) }, next };
    case 'bool': {
      fixedLength(type, len, at);
      const b = buf.readBigUInt64BE(v);
      if (b > 1n) throw malformed(`boolean value ${b} (must be 0 or 1)`, v);
      return { item: { tag, type, value: b === 1n }, next };
    }
    case 'bigint': {
      if (len === 0 || len % 8 !== 0)
        throw malformed(`big integer length ${len} not a positive multiple of 8`, at + 4);
      let x = 0n;
      for (let i = 0; i < len; i++) x = (x << 8n) | BigInt(buf[v + i]!);
      return { item: { tag, type, value: BigInt.asIntN(len * 8, x) }, next };
    }
    case 'text': {
      zeros(buf, v + len, next);
      let s: string;
      try {
        s = utf8.decode(buf.subarray(v, v + len));
      } catch {
        throw malformed('text string that is not UTF-8', v);
      }
      return { item: { tag, type, value: s }, next };
    }
    case 'bytes': {
      zeros(buf, v + len, next);
      // A copy: the caller wipes the message buffer, and may wipe this value on its own.
      return { item: { tag, type, value: Buffer.from(buf.subarray(v, v + len)) }, next };
    }
  }
}

/**
 * Decodes exactly one TTLV item (a whole message) from buf. Byte strings in the result are copies, so the
 * caller can wipe buf afterwards. Throws AtrestError('KEY_SERVER_ERROR') on anything malformed.
 */
export function decodeTtlv(buf: Uint8Array, maxBytes = MAX_MESSAGE_BYTES): Ttlv {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length > maxBytes)
    throw malformed(`message of ${b.length} bytes exceeds the ${maxBytes}-byte limit`, 0);
  const { item, next } = readItem(b, 0, b.length, 0);
  if (next !== b.length) throw malformed(`${b.length - next} trailing bytes after the message`, next);
  return item;
}

// ---- reading decoded items ----

/** The first child of s with this tag, if any. */
export function child(s: TtlvStructure, tag: number): Ttlv | undefined {
  return s.value.find((c) => c.tag === tag);
}

/** All children of s with this tag. */
export function children(s: TtlvStructure, tag: number): Ttlv[] {
  return s.value.filter((c) => c.tag === tag);
}

interface ValueOf {
  structure: Ttlv[];
  integer: number;
  long: bigint;
  bigint: bigint;
  enum: number;
  bool: boolean;
  text: string;
  bytes: Buffer;
  datetime: bigint;
  interval: number;
}

/** The child of s with this tag and type; a missing or mistyped field is a KEY_SERVER_ERROR naming `what`. */
export function field<T extends TtlvType>(s: TtlvStructure, tag: number, type: T, what: string): ValueOf[T] {
  const c = optionalField(s, tag, type, what);
  if (c === undefined)
    throw new AtrestError('KEY_SERVER_ERROR', `the key server's KMIP response has no ${what}`, {
      hint: 'the key server answered with a message atrest does not understand',
    });
  return c;
}

/** Like field(), but undefined when absent (still an error when present with the wrong type). */
export function optionalField<T extends TtlvType>(
  s: TtlvStructure,
  tag: number,
  type: T,
  what: string,
): ValueOf[T] | undefined {
  const c = child(s, tag);
  if (c === undefined) return undefined;
  if (c.type !== type)
    throw new AtrestError(
      'KEY_SERVER_ERROR',
      `the key server's KMIP response has ${what} of type ${c.type}, not ${type}`,
      {
        hint: 'the key server answered with a message atrest does not understand',
      },
    );
  return c.value as ValueOf[T];
}

// Known-answer and malformed-input tests for the KMIP TTLV codec.
import { describe, expect, it } from 'vitest';
import { rejects } from '../../errors/rejects.test-helper.js';
import {
  MAX_DEPTH,
  bigInt,
  bool,
  bytes,
  dateTime,
  decodeTtlv,
  encodeTtlv,
  enumeration,
  int,
  interval,
  long,
  struct,
  text,
  ttlvMessageLength,
  type Ttlv,
} from './ttlv.js';
import { hex, PYKMIP_ACTIVATE_1, PYKMIP_LOCATE_NAME } from './pykmip-vectors.test-helper.js';

/** Runs fn and returns the AtrestError it throws (sync version of rejects()). */
async function throws(fn: () => unknown, code: string, text?: RegExp): Promise<void> {
  await rejects(Promise.resolve().then(fn), code, text);
}

// OASIS KMIP Specification v1.4 (also 1.0-1.3), section 9.1.2 "Examples" of the TTLV encoding
// (http://docs.oasis-open.org/kmip/spec/v1.4/os/kmip-spec-v1.4-os.html#_Toc490660916), tag 420020 throughout.
const SPEC_EXAMPLES: [string, Ttlv, string][] = [
  [
    'an Integer containing the decimal value 8',
    int(0x420020, 8),
    '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00',
  ],
  [
    'a Long Integer containing the decimal value 123456789000000000',
    long(0x420020, 123456789000000000n),
    '42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00',
  ],
  [
    'a Big Integer containing the decimal value 1234567890000000000000000000',
    bigInt(0x420020, 1234567890000000000000000000n),
    '42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00',
  ],
  [
    'an Enumeration with value 255',
    enumeration(0x420020, 255),
    '42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00',
  ],
  [
    'a Boolean with the value True',
    bool(0x420020, true),
    '42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01',
  ],
  [
    'a Text String with the value "Hello World"',
    text(0x420020, 'Hello World'),
    '42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00',
  ],
  [
    'a Byte String with the value { 0x01, 0x02, 0x03 }',
    bytes(0x420020, Buffer.from([1, 2, 3])),
    '42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00',
  ],
  [
    'a Date-Time containing the value for Friday, March 14, 2008, 11:56:40 GMT',
    dateTime(0x420020, BigInt(Date.UTC(2008, 2, 14, 11, 56, 40) / 1000)),
    '42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8',
  ],
  [
    'an Interval containing the value for 10 days',
    interval(0x420020, 10 * 24 * 3600),
    '42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00',
  ],
  [
    'a Structure containing an Enumeration, value 254, followed by an Integer, value 255, tags 420004 and 420005',
    struct(0x420020, enumeration(0x420004, 254), int(0x420005, 255)),
    '42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00',
  ],
];

// Whole messages. PROTOCOL_VERSION_1_1: the KMIP 1.1 Test Cases, section 3.1.1 (Protocol Version 1.1 in a
// request header), as quoted in PyKMIP's unit tests (kmip/tests/unit/core/messages/contents). The others
// (pykmip-vectors.test-helper.ts) were produced by PyKMIP 0.10's own encoder (kmip.core.messages, KMIP 1.4),
// an independent implementation, for the same requests and responses atrest builds.
const PROTOCOL_VERSION_1_1 =
  '42006901000000204200 6A0200000004000000010000000042006B02000000040000000100000000'.replace(/ /g, '');

describe('TTLV codec', () => {
  for (const [what, item, bytesHex] of SPEC_EXAMPLES) {
    it(`encodes and decodes the spec's example: ${what}`, () => {
      expect(encodeTtlv(item).toString('hex')).toBe(hex(bytesHex).toString('hex'));
      expect(decodeTtlv(hex(bytesHex))).toEqual(item);
    });
  }

  it('matches the KMIP test-case encoding of Protocol Version 1.1', () => {
    const v = struct(0x420069, int(0x42006a, 1), int(0x42006b, 1));
    expect(encodeTtlv(v).toString('hex')).toBe(PROTOCOL_VERSION_1_1.toLowerCase());
    expect(decodeTtlv(hex(PROTOCOL_VERSION_1_1))).toEqual(v);
  });

  it('round-trips negative, zero and large values', () => {
    const items: Ttlv[] = [
      int(0x420001, -1),
      int(0x420001, -0x80000000),
      long(0x420001, -(1n << 63n)),
      bigInt(0x420001, -1n),
      bigInt(0x420001, 0n),
      bigInt(0x420001, 18446744073709551615n),
      bigInt(0x420001, -(1n << 100n)),
      bool(0x420001, false),
      text(0x420001, ''),
      text(0x420001, 'naïve ✓'),
      bytes(0x420001, Buffer.alloc(0)),
      bytes(0x420001, Buffer.alloc(8, 0xff)),
      struct(0x420001),
      struct(0x540001, struct(0x420002, text(0x420003, 'x'))),
    ];
    for (const item of items) expect(decodeTtlv(encodeTtlv(item))).toEqual(item);
    // 2^64-1 needs a 16-byte big integer (a leading zero word keeps it positive).
    expect(encodeTtlv(bigInt(0x420001, 18446744073709551615n)).subarray(8).toString('hex')).toBe(
      '0000000000000000ffffffffffffffff',
    );
  });

  it('refuses to encode values that do not fit their type (a bug, not bad input)', async () => {
    await throws(() => encodeTtlv(int(0x420001, 2 ** 31)), 'INTERNAL');
    await throws(() => encodeTtlv(int(0x420001, 1.5)), 'INTERNAL');
    await throws(() => encodeTtlv(enumeration(0x420001, -1)), 'INTERNAL');
    await throws(() => encodeTtlv(long(0x420001, 1n << 63n)), 'INTERNAL');
    await throws(() => encodeTtlv(int(0x1000000, 1)), 'INTERNAL');
  });

  it('gives byte strings as copies, so wiping the message leaves them intact (and vice versa)', () => {
    const msg = encodeTtlv(struct(0x420001, bytes(0x4200c2, Buffer.alloc(32, 7))));
    const d = decodeTtlv(msg);
    msg.fill(0);
    expect(d.type === 'structure' && d.value[0]!.value).toEqual(Buffer.alloc(32, 7));
  });

  it('reads the message length from the first 8 bytes, and refuses a header that is not a KMIP message', async () => {
    expect(ttlvMessageLength(hex(PYKMIP_ACTIVATE_1).subarray(0, 8))).toBe(hex(PYKMIP_ACTIVATE_1).length);
    await throws(
      () => ttlvMessageLength(hex('48 54 54 50 2f 31 2e 31')),
      'KEY_SERVER_ERROR',
      /outside the KMIP ranges/,
    ); // "HTTP/1.1"
    await throws(
      () => ttlvMessageLength(hex('42 00 7b | 07 | 00 00 00 08')),
      'KEY_SERVER_ERROR',
      /not a structure/,
    );
    await throws(
      () => ttlvMessageLength(hex('42 00 7b | 01 | 00 00 00 09')),
      'KEY_SERVER_ERROR',
      /multiple of 8/,
    );
    await throws(() => ttlvMessageLength(hex('42 00 7b | 01 | 7f ff ff f8')), 'KEY_SERVER_ERROR', /exceeds/);
    await throws(() => ttlvMessageLength(hex('42 00 7b | 01 | 00 00')), 'KEY_SERVER_ERROR', /header/);
  });
});

describe('TTLV decoder on malformed input', () => {
  const bad: [string, string, RegExp][] = [
    ['empty input', '', /truncated item header/],
    ['a truncated header', '42 00 20 | 02 | 00 00', /truncated item header/],
    ['a truncated value', '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08', /runs past the end/],
    [
      'a length running past the end',
      '42 00 20 | 08 | 00 00 10 00 | 01 02 03 00 00 00 00 00',
      /runs past the end/,
    ],
    ['a huge length', '42 00 20 | 08 | ff ff ff ff | 01 02 03 00 00 00 00 00', /runs past the end/],
    [
      'an Integer of length 8',
      '42 00 20 | 02 | 00 00 00 08 | 00 00 00 08 00 00 00 00',
      /length 8 \(must be 4\)/,
    ],
    ['an Enumeration of length 2', '42 00 20 | 05 | 00 00 00 02 | 00 ff 00 00 00 00 00 00', /must be 4/],
    ['a Long Integer of length 4', '42 00 20 | 03 | 00 00 00 04 | 00 00 00 08 00 00 00 00', /must be 8/],
    ['non-zero Integer padding', '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 01', /non-zero padding/],
    [
      'non-zero Text String padding',
      '42 00 20 | 07 | 00 00 00 01 | 41 00 00 00 00 00 00 ff',
      /non-zero padding/,
    ],
    ['a Boolean that is neither 0 nor 1', '42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02', /boolean/],
    ['a Big Integer of length 0', '42 00 20 | 04 | 00 00 00 00', /big integer length/],
    [
      'a Big Integer of length 4',
      '42 00 20 | 04 | 00 00 00 04 | 00 00 00 01 00 00 00 00',
      /big integer length/,
    ],
    [
      'an unknown item type',
      '42 00 20 | 0c | 00 00 00 04 | 00 00 00 01 00 00 00 00',
      /unknown item type 0xc/,
    ],
    [
      'a tag outside the KMIP ranges',
      '13 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00',
      /outside the KMIP ranges/,
    ],
    ['invalid UTF-8 text', '42 00 20 | 07 | 00 00 00 02 | c3 28 00 00 00 00 00 00', /not UTF-8/],
    [
      'a structure length not a multiple of 8',
      '42 00 20 | 01 | 00 00 00 0c | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 fe',
      /multiple of 8/,
    ],
    [
      'a child running past its structure',
      '42 00 20 | 01 | 00 00 00 08 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 fe 00 00 00 00',
      /truncated item header|runs past the end/,
    ],
    [
      'trailing bytes after the message',
      '42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00 | 00',
      /trailing bytes/,
    ],
  ];
  for (const [what, bytesHex, msg] of bad)
    it(`refuses ${what} with a typed error`, async () => {
      await throws(() => decodeTtlv(hex(bytesHex)), 'KEY_SERVER_ERROR', msg);
    });

  it(`refuses structures nested deeper than ${MAX_DEPTH} levels, without recursing further`, async () => {
    let item: Ttlv = int(0x420001, 1);
    for (let i = 0; i < MAX_DEPTH; i++) item = struct(0x420001, item);
    expect(decodeTtlv(encodeTtlv(item))).toEqual(item); // MAX_DEPTH levels of structure are fine
    await throws(() => decodeTtlv(encodeTtlv(struct(0x420001, item))), 'KEY_SERVER_ERROR', /nested deeper/);
    // A hostile header claiming 100000 levels of nesting is refused at level MAX_DEPTH.
    const deep = Buffer.alloc(8 * 100_000);
    for (let i = 0; i < 100_000; i++) {
      deep.writeUIntBE(0x420001, i * 8, 3);
      deep[i * 8 + 3] = 0x01;
      deep.writeUInt32BE(8 * (100_000 - i - 1), i * 8 + 4);
    }
    await throws(() => decodeTtlv(deep, 1 << 20), 'KEY_SERVER_ERROR', /nested deeper/);
  });

  it('refuses an oversized message', async () => {
    await throws(() => decodeTtlv(Buffer.alloc(64), 56), 'KEY_SERVER_ERROR', /exceeds the 56-byte limit/);
  });

  it('never throws anything but a KEY_SERVER_ERROR on random or mutated input', () => {
    const good = hex(PYKMIP_LOCATE_NAME);
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(good.subarray(0, i % 3 === 0 ? rnd(good.length + 1) : good.length));
      for (let k = 0; k < 1 + rnd(4); k++) if (b.length) b[rnd(b.length)] = rnd(256);
      try {
        decodeTtlv(b);
      } catch (err) {
        expect((err as { code?: string }).code).toBe('KEY_SERVER_ERROR');
      }
    }
  });
});

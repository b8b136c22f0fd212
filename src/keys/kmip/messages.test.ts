// KMIP request encodings against an independent implementation (PyKMIP 0.10), and what response results mean.
import { describe, expect, it } from 'vitest';
import { AtrestError } from '../../errors/index.js';
import {
  createPayload,
  failureCode,
  locatePayload,
  requestMessage,
  responsePayload,
  revokePayload,
  uidPayload,
} from './messages.js';
import {
  hex,
  PYKMIP_ACTIVATE_1,
  PYKMIP_DECRYPT_PERMISSION_DENIED,
  PYKMIP_ENCRYPT_OK,
  PYKMIP_LOCATE_NAME,
} from './pykmip-vectors.test-helper.js';
import { Operation, ResultReason, Tag } from './tags.js';
import { decodeTtlv, encodeTtlv, enumeration, field, int, struct, text } from './ttlv.js';

function responseWith(...item: ReturnType<typeof int>[]): ReturnType<typeof struct> {
  return struct(Tag.ResponseMessage, struct(Tag.ResponseHeader), struct(Tag.BatchItem, ...item));
}

describe('KMIP messages', () => {
  it('encode Activate and Locate-by-name exactly as PyKMIP does', () => {
    expect(requestMessage(Operation.Activate, uidPayload('1')).toString('hex')).toBe(PYKMIP_ACTIVATE_1);
    expect(requestMessage(Operation.Locate, locatePayload('vol-a')).toString('hex')).toBe(PYKMIP_LOCATE_NAME);
  });

  it('build a Create template with the name and the version attribute', () => {
    const msg = encodeTtlv(struct(Tag.RequestPayload, ...createPayload('vol-a', 3)));
    const s = msg.toString('latin1');
    for (const want of [
      'Cryptographic Algorithm',
      'Cryptographic Length',
      'Cryptographic Usage Mask',
      'Name',
      'vol-a',
      'x-atrest-version',
    ])
      expect(s).toContain(want);
    expect(s).toContain('Application Specific Information');
  });

  it('put a Compromise Occurrence Date only in key-compromise revocations', () => {
    const date = new Date(Date.UTC(2008, 2, 14, 11, 56, 40));
    const k = struct(Tag.RequestPayload, ...revokePayload('9', 'key-compromise', date));
    expect(encodeTtlv(k).toString('hex')).toContain('4200210900000008' + '0000000047da67f8');
    const c = struct(Tag.RequestPayload, ...revokePayload('9', 'cessation-of-operation', date));
    expect(encodeTtlv(c).toString('hex')).not.toContain('420021');
  });

  it('read a successful PyKMIP Encrypt response', () => {
    const p = responsePayload(
      decodeTtlv(hex(PYKMIP_ENCRYPT_OK)),
      Operation.Encrypt,
      '127.0.0.1:5696',
      'key 7',
    );
    expect(field(p, Tag.UniqueIdentifier, 'text', 'uid')).toBe('7');
    expect(field(p, Tag.Data, 'bytes', 'data')).toEqual(Buffer.from([...Array(32).keys()]));
    expect(field(p, Tag.AuthenticatedEncryptionTag, 'bytes', 'tag')).toEqual(Buffer.alloc(16, 0xaa));
  });

  it('turn a PyKMIP Permission Denied on Decrypt into KEY_UNAVAILABLE naming the server and the key', () => {
    let err: unknown;
    try {
      responsePayload(
        decodeTtlv(hex(PYKMIP_DECRYPT_PERMISSION_DENIED)),
        Operation.Decrypt,
        '10.0.0.1:5696',
        'key 7',
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AtrestError);
    const e = err as AtrestError;
    expect(e.code).toBe('KEY_UNAVAILABLE');
    expect(e.message).toBe(
      'KMIP Decrypt of key 7 on key server 10.0.0.1:5696 failed (Permission Denied: not active)',
    );
  });

  it('map result reasons to what they mean for atrest', () => {
    expect(failureCode(ResultReason.ItemNotFound)).toBe('KEY_UNAVAILABLE');
    expect(failureCode(ResultReason.PermissionDenied)).toBe('KEY_UNAVAILABLE');
    expect(failureCode(ResultReason.IllegalOperation)).toBe('KEY_UNAVAILABLE');
    expect(failureCode(ResultReason.ObjectArchived)).toBe('KEY_UNAVAILABLE');
    expect(failureCode(ResultReason.AuthenticationNotSuccessful)).toBe('KEY_SERVER_REFUSED');
    expect(failureCode(ResultReason.CryptographicFailure)).toBe('WRONG_KEY');
    expect(failureCode(ResultReason.GeneralFailure)).toBe('KEY_SERVER_ERROR');
    expect(failureCode(ResultReason.InvalidMessage)).toBe('KEY_SERVER_ERROR');
    expect(failureCode(undefined)).toBe('KEY_SERVER_ERROR');
  });

  it('refuse responses that are not a one-item answer to the request', () => {
    const where = '127.0.0.1:5696';
    const codeOf = (msg: ReturnType<typeof struct>): string => {
      try {
        responsePayload(msg, Operation.Decrypt, where, 'key 1');
      } catch (e) {
        return (e as AtrestError).code;
      }
      return 'none';
    };
    expect(codeOf(struct(Tag.RequestMessage))).toBe('KEY_SERVER_ERROR');
    expect(codeOf(struct(Tag.ResponseMessage, struct(Tag.ResponseHeader)))).toBe('KEY_SERVER_ERROR');
    // an answer to another operation
    expect(
      codeOf(responseWith(enumeration(Tag.Operation, Operation.Encrypt), enumeration(Tag.ResultStatus, 0))),
    ).toBe('KEY_SERVER_ERROR');
    // no result status, or one of the wrong type
    expect(codeOf(responseWith(enumeration(Tag.Operation, Operation.Decrypt)))).toBe('KEY_SERVER_ERROR');
    expect(codeOf(responseWith(text(Tag.ResultStatus, 'ok')))).toBe('KEY_SERVER_ERROR');
    // pending/undone are failures too
    expect(codeOf(responseWith(enumeration(Tag.ResultStatus, 2)))).toBe('KEY_SERVER_ERROR');
    expect(codeOf(responseWith(enumeration(Tag.ResultStatus, 0)))).toBe('none');
  });
});

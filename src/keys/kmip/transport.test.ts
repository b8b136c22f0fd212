// How network and TLS failures reaching a KMIP server are reported.
import { describe, expect, it } from 'vitest';
import { AtrestError } from '../../errors/index.js';
import { address, classifyTlsError } from './transport.js';

const ep = { host: '10.1.2.3', port: 5696, ca: Buffer.alloc(0), cert: Buffer.alloc(0), key: Buffer.alloc(0) };
const sysErr = (code: string, message = code): Error => Object.assign(new Error(message), { code });

describe('KMIP transport errors', () => {
  it('name the server by host:port (brackets for IPv6)', () => {
    expect(address(ep)).toBe('10.1.2.3:5696');
    expect(address({ host: 'fd00::1', port: 5696 })).toBe('[fd00::1]:5696');
  });

  it('report network failures as KEY_SERVER_UNREACHABLE naming the address', () => {
    for (const code of [
      'ECONNREFUSED',
      'ECONNRESET',
      'EHOSTUNREACH',
      'ENETUNREACH',
      'ETIMEDOUT',
      'EPIPE',
      'ENOTFOUND',
    ]) {
      const e = classifyTlsError(sysErr(code, `connect ${code} 10.1.2.3:5696`), ep);
      expect(e.code).toBe('KEY_SERVER_UNREACHABLE');
      expect(e.message).toBe(`key server 10.1.2.3:5696 unreachable: ${code}`);
    }
  });

  it('report a TLS alert refusing the client certificate as KEY_SERVER_REFUSED', () => {
    for (const code of [
      'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA',
      'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE',
      'ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE',
      'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED',
      'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED',
    ]) {
      const e = classifyTlsError(sysErr(code), ep);
      expect(e.code).toBe('KEY_SERVER_REFUSED');
      expect(e.message).toContain("refused this host's client certificate");
    }
  });

  it('report an untrusted server certificate as KEY_SERVER_REFUSED', () => {
    for (const code of [
      'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
      'DEPTH_ZERO_SELF_SIGNED_CERT',
      'ERR_TLS_CERT_ALTNAME_INVALID',
    ]) {
      const e = classifyTlsError(sysErr(code), ep);
      expect(e.code).toBe('KEY_SERVER_REFUSED');
      expect(e.message).toBe(`the certificate of key server 10.1.2.3:5696 is not trusted (${code})`);
    }
  });

  it('report an unusable certificate or key as USAGE without its bytes', () => {
    const e = classifyTlsError(sysErr('ERR_OSSL_X509_KEY_VALUES_MISMATCH', 'key values mismatch'), ep);
    expect(e.code).toBe('USAGE');
    expect(e.message).toContain('ERR_OSSL_X509_KEY_VALUES_MISMATCH');
  });

  it('pass AtrestErrors through', () => {
    const a = new AtrestError('KEY_SERVER_ERROR', 'x');
    expect(classifyTlsError(a, ep)).toBe(a);
  });
});

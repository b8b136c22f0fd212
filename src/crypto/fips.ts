// FIPS mode: refuse to run unless Node's OpenSSL has a FIPS provider active.
import { getFips } from 'node:crypto';
import { AtrestError } from '../errors/index.js';

/** Whether Node's OpenSSL runs in FIPS mode (a FIPS provider loaded and enforced). */
export function fipsActive(): boolean {
  try {
    return getFips() === 1;
  } catch {
    return false;
  }
}

/** Throws FIPS_UNAVAILABLE, with how to enable a FIPS provider, unless FIPS mode is active. */
export function requireFips(): void {
  if (fipsActive()) return;
  throw new AtrestError(
    'FIPS_UNAVAILABLE',
    "FIPS mode requested, but Node's OpenSSL is not running a FIPS provider",
    {
      hint:
        'install an OpenSSL 3 FIPS provider (fips.so), run `openssl fipsinstall -out /etc/ssl/fipsmodule.cnf ' +
        '-module .../ossl-modules/fips.so`, include it from an openssl.cnf that activates it, then start atrest ' +
        'with OPENSSL_CONF=/path/openssl.cnf and NODE_OPTIONS=--enable-fips',
    },
  );
}

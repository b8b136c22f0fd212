// The KMIP provider's default connection: a KmipClient (client.ts, TTLV over node:tls with mutual TLS) per configured server.
import { KmipClient } from './client.js';
import { KmipKekProvider, type KmipConnect } from './provider.js';

export const connectKmip: KmipConnect = (ep) => new KmipClient(ep);

/** A KMIP provider that reaches real servers. */
export function newKmipProvider(): KmipKekProvider {
  return new KmipKekProvider({ connect: connectKmip });
}

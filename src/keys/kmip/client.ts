// KMIP 1.4 client for the `kmip:` key provider: the operations atrest needs on a key server, over mutual TLS.
//
// Protocol: KMIP 1.4 TTLV over TLS 1.2+ (node:tls). Connections are reused (pool.ts: up to 4, one request in
// flight on each, closed after 5 s idle, never keeping the process alive): against pykmip-server on
// localhost an unwrap takes ~4 ms on a reused connection and ~21 ms with a fresh handshake each
// (scripts/bench-kmip.mjs). 1.4 because it is the first version whose Encrypt/Decrypt carry the AES-GCM tag
// fields; pykmip-server 0.10 implements it.
//
// Keys: Create makes an AES-256 Symmetric Key with usage mask Encrypt|Decrypt, the Name attribute `name`,
// and its version as an Application Specific Information attribute (namespace "x-atrest-version", data the
// decimal version). Several objects share one Name, one per version: Locate by Name returns all of them and
// getAttributes() reports each one's version (versions() does both). Why not a custom "x-atrest-version"
// attribute: pykmip-server 0.10 cannot parse a Create that carries one (Result Reason Invalid Message; its
// template code would also call it unsupported). Why not an Object Group: it would still need the version
// somewhere. Application Specific Information is standard since KMIP 1.0 and pykmip supports it on Create,
// Get Attributes and Locate. pykmip does not enforce the uniqueness of Name across objects, which the KMIP
// spec asks servers to do; against a server that enforces it the caller needs a per-version name.
//
// Wrap/unwrap: Encrypt/Decrypt with AES-GCM on the server, a 12-byte random IV chosen here and a 16-byte
// tag. encrypt() returns { data: ciphertext || tag, iv }; decrypt() takes them back. The key never leaves
// the server. Plaintext secrets only travel inside request/response Buffers, which are wiped after use;
// decrypt() returns a Buffer the caller wipes.
//
// Errors: network, TLS handshake cut or timeout -> KEY_SERVER_UNREACHABLE (names host:port); a TLS alert
// refusing our certificate, an untrusted server certificate, or KMIP Authentication Not Successful ->
// KEY_SERVER_REFUSED; Item Not Found / Permission Denied / Illegal Operation (wrong state; pykmip answers
// Encrypt/Decrypt on a non-active key with Permission Denied) -> KEY_UNAVAILABLE; Cryptographic Failure on
// Decrypt -> WRONG_KEY; anything else malformed or unexpected -> KEY_SERVER_ERROR.
import { randomBytes } from 'node:crypto';
import { AtrestError } from '../../errors/index.js';
import {
  GCM_IV_BYTES,
  GCM_TAG_BYTES,
  VERSION_NAMESPACE,
  createPayload,
  decryptPayload,
  encryptPayload,
  getAttributesPayload,
  locatePayload,
  requestMessage,
  responsePayload,
  revokePayload,
  stateName,
  uidPayload,
  type KmipState,
} from './messages.js';
import { Operation, Tag } from './tags.js';
import { children, decodeTtlv, field, optionalField, type Ttlv, type TtlvStructure } from './ttlv.js';
import { KmipPool } from './pool.js';
import { address, type KmipEndpoint } from './transport.js';

export type { KmipEndpoint } from './transport.js';
export type { KmipState } from './messages.js';

export interface KmipKeyInfo {
  uid: string;
  state: KmipState;
  name?: string;
  version?: number;
}

export type RevocationReason = 'key-compromise' | 'cessation-of-operation';

export class KmipClient {
  readonly address: string;
  private closed = false;
  private readonly pool: KmipPool;

  constructor(ep: KmipEndpoint) {
    if (!ep.host || !Number.isInteger(ep.port) || ep.port < 1 || ep.port > 65535)
      throw new AtrestError('USAGE', `invalid key server address ${ep.host}:${ep.port}`, {
        hint: 'give a host name or address and a port between 1 and 65535',
      });
    this.address = address(ep);
    const opts: { maxConnections?: number; idleMs?: number } = {};
    if (ep.maxConnections !== undefined) opts.maxConnections = ep.maxConnections;
    if (ep.idleMs !== undefined) opts.idleMs = ep.idleMs;
    this.pool = new KmipPool(ep, opts);
  }

  /** Sends one operation and returns its response payload; `what` names the object for messages. */
  private async call(
    operation: number,
    payload: Ttlv[],
    what: string,
    wipeRequest = false,
  ): Promise<TtlvStructure> {
    if (this.closed) throw new AtrestError('INTERNAL', `KMIP client for ${this.address} used after close()`);
    const request = requestMessage(operation, payload);
    let response: Buffer | undefined;
    try {
      response = await this.pool.send(request);
      const msg = decodeTtlv(response);
      return responsePayload(msg, operation, this.address, what);
    } finally {
      if (wipeRequest) request.fill(0);
      response?.fill(0);
    }
  }

  private uidOf(p: TtlvStructure, what: string): string {
    return field(p, Tag.UniqueIdentifier, 'text', `Unique Identifier (${what})`);
  }

  /** Creates an AES-256 key named `name` with version `version` (pre-active); returns its Unique Identifier. */
  async create(name: string, version: number): Promise<string> {
    if (!Number.isSafeInteger(version) || version < 1)
      throw new AtrestError('USAGE', `key version ${version} must be a positive integer`);
    const p = await this.call(
      Operation.Create,
      createPayload(name, version),
      `key "${name}" version ${version}`,
    );
    return this.uidOf(p, 'Create');
  }

  async activate(uid: string): Promise<void> {
    await this.call(Operation.Activate, uidPayload(uid), `key ${uid}`);
  }

  /** The Unique Identifiers of every object named `name`, in the server's order (unspecified). */
  async locate(name: string): Promise<string[]> {
    const p = await this.call(Operation.Locate, locatePayload(name), `key "${name}"`);
    return children(p, Tag.UniqueIdentifier).map((c) => {
      if (c.type !== 'text')
        throw new AtrestError(
          'KEY_SERVER_ERROR',
          `key server ${this.address} sent a Locate result that is not text`,
        );
      return c.value;
    });
  }

  /** The key's state, and its name and atrest version when it has them. */
  async getAttributes(uid: string): Promise<KmipKeyInfo> {
    const p = await this.call(Operation.GetAttributes, getAttributesPayload(uid), `key ${uid}`);
    const info: Partial<KmipKeyInfo> = { uid };
    for (const a of children(p, Tag.Attribute)) {
      if (a.type !== 'structure') continue;
      const name = field(a, Tag.AttributeName, 'text', 'Attribute Name');
      const value = a.value.find((c) => c.tag === Tag.AttributeValue);
      if (!value) continue;
      if (name === 'State' && value.type === 'enum') info.state = stateName(value.value, this.address);
      else if (name === 'Name' && value.type === 'structure' && info.name === undefined)
        info.name = optionalField(value, Tag.NameValue, 'text', 'Name Value');
      else if (name === 'Application Specific Information' && value.type === 'structure') {
        const ns = optionalField(value, Tag.ApplicationNamespace, 'text', 'Application Namespace');
        const data = optionalField(value, Tag.ApplicationData, 'text', 'Application Data');
        if (ns === VERSION_NAMESPACE && data !== undefined && /^[1-9]\d{0,14}$/.test(data))
          info.version = Number(data);
      }
    }
    if (info.state === undefined)
      throw new AtrestError(
        'KEY_SERVER_ERROR',
        `key server ${this.address} did not report the state of key ${uid}`,
        {
          hint: 'check that the address is a KMIP 1.4 server',
        },
      );
    return info as KmipKeyInfo;
  }

  /**
   * Every key named `name` with its state and version, highest version first (keys without an atrest
   * version last): Locate, then Get Attributes of each.
   */
  async versions(name: string): Promise<KmipKeyInfo[]> {
    const infos: KmipKeyInfo[] = [];
    for (const uid of await this.locate(name)) infos.push(await this.getAttributes(uid));
    return infos.sort((a, b) => (b.version ?? 0) - (a.version ?? 0));
  }

  /** AES-256-GCM encryption of `data` on the server with key `uid`: { data: ciphertext || tag, iv }. */
  async encrypt(uid: string, data: Uint8Array): Promise<{ data: Buffer; iv: Buffer }> {
    const iv = randomBytes(GCM_IV_BYTES);
    const p = await this.call(Operation.Encrypt, encryptPayload(uid, data, iv), `key ${uid}`, true);
    const ct = field(p, Tag.Data, 'bytes', 'Data');
    const tag = field(p, Tag.AuthenticatedEncryptionTag, 'bytes', 'Authenticated Encryption Tag');
    const ivBack = optionalField(p, Tag.IvCounterNonce, 'bytes', 'IV/Counter/Nonce');
    if (
      ct.length !== data.length ||
      tag.length !== GCM_TAG_BYTES ||
      (ivBack !== undefined && !ivBack.equals(iv))
    )
      throw new AtrestError(
        'KEY_SERVER_ERROR',
        `key server ${this.address} returned an Encrypt result of the wrong shape`,
        {
          hint: 'check that the key server supports AES-GCM with a 16-byte tag',
        },
      );
    return { data: Buffer.concat([ct, tag]), iv };
  }

  /** Decrypts what encrypt() returned; the plaintext is a Buffer the caller wipes. */
  async decrypt(uid: string, data: Uint8Array, iv: Uint8Array): Promise<Buffer> {
    if (data.length < GCM_TAG_BYTES || iv.length !== GCM_IV_BYTES)
      throw new AtrestError(
        'WRONG_KEY',
        `KMIP-wrapped secret for key ${uid} is too short or has a ${iv.length}-byte IV`,
        {
          hint: 'the wrapped secret is damaged; use a recovery key',
        },
      );
    const d = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const ct = d.subarray(0, d.length - GCM_TAG_BYTES);
    const tag = d.subarray(d.length - GCM_TAG_BYTES);
    const p = await this.call(Operation.Decrypt, decryptPayload(uid, ct, iv, tag), `key ${uid}`, true);
    const plain = field(p, Tag.Data, 'bytes', 'Data');
    if (plain.length !== ct.length) {
      plain.fill(0);
      throw new AtrestError(
        'KEY_SERVER_ERROR',
        `key server ${this.address} returned a Decrypt result of the wrong length`,
      );
    }
    return plain;
  }

  /**
   * Revokes the key: 'key-compromise' (state Compromised, from any state) or 'cessation-of-operation'
   * (default; Active -> Deactivated).
   */
  async revoke(uid: string, reason: RevocationReason = 'cessation-of-operation'): Promise<void> {
    await this.call(Operation.Revoke, revokePayload(uid, reason, new Date()), `key ${uid}`);
  }

  /** Closes the idle connections; after close() the client refuses further calls. */
  close(): Promise<void> {
    this.closed = true;
    this.pool.close();
    return Promise.resolve();
  }
}

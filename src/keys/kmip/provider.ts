// A KEK provider backed by a KMIP key server: the KEK never leaves the server; wrap and unwrap are server-side Encrypt and Decrypt of the keyslot secret.
//
// Reference. A token stores `ref:NAME`; `--kek kmip:NAME` or `--kek NAME` names the same entry of
// providers.json, which says where the server is (host, port, CA, client certificate and key) and
// which key it holds (keyName, or one fixed uid). Nothing read from an image names a host or a file.
// The URI this provider is called with is `kmip:NAME#FINGERPRINT` (register(): from the configuration).
//
// Versions. Every KMIP key named `keyName` is a version; its version is what the client reports
// (KmipKeyInfo.version: Application Specific Information, namespace "x-atrest-version"; 1 when
// absent). current() is the newest active one. A fixed `uid` has the version the server reports for it.
//
// Blob (blob.ts): the server's Encrypt output and the IV it used.
// KekRef.keyId is the key's unique identifier. It comes from the token (untrusted), so before any
// Encrypt or Decrypt the key's attributes are read and its name must be the configured one (or its
// uid the configured uid): an image cannot make the host use another key it happens to reach.
//
// Availability. available(): the key's state is active. Revoked, deactivated, destroyed, compromised,
// pre-active, unknown or refused: false. A server that cannot be reached (network, TLS, timeout)
// throws KEY_SERVER_UNREACHABLE (isUnreachable), which the daemon answers with a grace period.
import { createHash } from 'node:crypto';
import { AtrestError, isAtrestError, type ErrorCode } from '../../errors/index.js';
import type { KekProvider, KekRef } from '../kek.js';
import { packBlob, unpackBlob } from './blob.js';
import { readTlsFile } from './tls-files.js';
import type { KmipEndpoint } from './transport.js';

/** What this provider needs from a KMIP client (src/keys/kmip/client.ts KmipClient has it). */
export interface KmipOps {
  create(name: string, version: number): Promise<string>;
  activate(uid: string): Promise<void>;
  locate(name: string): Promise<string[]>;
  getAttributes(uid: string): Promise<KmipKeyState>;
  encrypt(uid: string, data: Uint8Array): Promise<{ data: Buffer; iv: Buffer }>;
  decrypt(uid: string, data: Uint8Array, iv: Uint8Array): Promise<Buffer>;
  revoke(uid: string, reason?: 'key-compromise' | 'cessation-of-operation'): Promise<void>;
  close(): Promise<void>;
}

export interface KmipKeyState {
  uid: string;
  state: string;
  name?: string;
  version?: number;
}

/** How to reach a server: the client's endpoint, without its pool tuning. */
export type KmipConnection = Pick<KmipEndpoint, 'host' | 'port' | 'ca' | 'cert' | 'key' | 'timeoutMs'>;

export type KmipConnect = (ep: KmipConnection) => KmipOps;

/** One configured kmip provider entry (paths absolute, from providers.json). */
export interface KmipTarget {
  /** The entry's name in providers.json. */
  name: string;
  host: string;
  port: number;
  ca: string;
  cert: string;
  key: string;
  /** The KMIP Name of the key (all its versions); default: the entry name when uid is not given. */
  keyName?: string;
  /** One fixed key by unique identifier (instead of keyName). */
  uid?: string;
}

export const KMIP_SCHEME = 'kmip';
export const DEFAULT_KMIP_PORT = 5696;
/** Bound on one client operation: below the daemon's 5 s check bound, so a silent server reads as unreachable. */
export const DEFAULT_KMIP_TIMEOUT_MS = 3000;
/** The error code the KMIP client uses for network, TLS and timeout failures. */
export const UNREACHABLE_CODE = 'KEY_SERVER_UNREACHABLE' satisfies ErrorCode;

const SECRET_LEN = 32;

/** Whether err says a key server could not be reached (network, TLS, timeout), not that it refused. */
export function isUnreachable(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === UNREACHABLE_CODE;
}

/** The entry name of a `kmip:NAME` URI as a user or a token writes it (null if it is not exactly one). */
export function kmipName(uri: string): string | null {
  const m = /^kmip:([A-Za-z0-9][A-Za-z0-9._-]{0,63})$/i.exec(uri);
  return m?.[1] ?? null;
}

export interface KmipProviderOptions {
  connect: KmipConnect;
  /** Per-operation bound given to the client (default DEFAULT_KMIP_TIMEOUT_MS). */
  timeoutMs?: number;
  /** Test hook: the TLS material instead of reading the configured files. */
  readTls?: (t: KmipTarget) => Promise<{ ca: Buffer; cert: Buffer; key: Buffer }>;
}

export class KmipKekProvider implements KekProvider {
  readonly scheme = KMIP_SCHEME;
  readonly wrapAlg = 'kmip-encrypt-v1';
  /** A network provider: "unreachable" is a state of its own (see isUnreachable). */
  readonly network = true;
  private readonly targets = new Map<string, KmipTarget>();
  /** One client per server and TLS files, kept while the files' contents stay the same. */
  private readonly clients = new Map<string, { c: KmipOps; material: string }>();

  constructor(private readonly opts: KmipProviderOptions) {}

  /**
   * Binds a configured target; returns the URI to call this provider with: `kmip:NAME#FINGERPRINT`,
   * so two configurations of one NAME (a daemon serving requests with different providers.json)
   * never share a target.
   */
  register(t: KmipTarget): string {
    const target: KmipTarget = {
      name: t.name,
      host: t.host,
      port: t.port,
      ca: t.ca,
      cert: t.cert,
      key: t.key,
      ...(t.uid !== undefined ? { uid: t.uid } : { keyName: t.keyName ?? t.name }),
    };
    const fp = createHash('sha256').update(JSON.stringify(target)).digest('hex').slice(0, 12);
    const uri = `${KMIP_SCHEME}:${t.name}#${fp}`;
    this.targets.set(uri, target);
    return uri;
  }

  private target(uri: string): KmipTarget {
    const t = this.targets.get(uri);
    if (t === undefined) {
      throw new AtrestError('KEK_NOT_CONFIGURED', `KMIP provider ${JSON.stringify(uri)} is not configured`, {
        hint: 'add it to providers.json and give --kek NAME',
      });
    }
    return t;
  }

  private address(t: KmipTarget): string {
    return `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
  }

  /**
   * Runs `fn` with the target's client. The TLS files are read again for every call: the client (and
   * its pooled connections) is kept while they stay the same, and replaced when they change (a renewed
   * client certificate is used at once). Key-server errors name the server's address.
   */
  private async call<T>(t: KmipTarget, fn: (c: KmipOps) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.client(t));
    } catch (err) {
      throw this.named(t, err);
    }
  }

  private async client(t: KmipTarget): Promise<KmipOps> {
    const tls = this.opts.readTls
      ? await this.opts.readTls(t)
      : {
          ca: await readTlsFile(t.ca, 'CA certificate', false),
          cert: await readTlsFile(t.cert, 'client certificate', false),
          key: await readTlsFile(t.key, 'client key', true),
        };
    const where = JSON.stringify([t.host, t.port, t.ca, t.cert, t.key]);
    const h = createHash('sha256');
    for (const b of [tls.ca, tls.cert, tls.key]) h.update(createHash('sha256').update(b).digest());
    const material = h.digest('hex');
    const have = this.clients.get(where);
    if (have !== undefined && have.material === material) return have.c;
    const c = this.opts.connect({
      host: t.host,
      port: t.port,
      ...tls,
      timeoutMs: this.opts.timeoutMs ?? DEFAULT_KMIP_TIMEOUT_MS,
    });
    this.clients.set(where, { c, material });
    if (have !== undefined) void have.c.close().catch(() => undefined);
    return c;
  }

  /** A key-server error (unreachable, refused, protocol) that does not name the server yet gets its address. */
  private named(t: KmipTarget, err: unknown): unknown {
    if (!isAtrestError(err) || !err.code.startsWith('KEY_SERVER_')) return err;
    const addr = this.address(t);
    if (err.message.includes(addr)) return err;
    return new AtrestError(err.code, `KMIP server ${addr} (provider ${t.name}): ${err.message}`, {
      hint: err.hint ?? `check that the key server at ${addr} is up and reachable`,
      cause: err,
    });
  }

  private unavailable(t: KmipTarget, what: string, why: string): AtrestError {
    return new AtrestError(
      'KEY_UNAVAILABLE',
      `key revoked or unavailable: kmip:${t.name} ${what} on ${this.address(t)} ${why}`,
      { hint: 'restore access to the key on the KMIP server, or unlock with a recovery keyslot' },
    );
  }

  /** Whether a key's attributes make it one of this target's keys. */
  private ours(t: KmipTarget, info: KmipKeyState): boolean {
    if (t.uid !== undefined) return info.uid === t.uid;
    return info.name === (t.keyName ?? t.name);
  }

  /** The key `uid` after checking it belongs to the target; `active` also requires state active. */
  private async checked(t: KmipTarget, c: KmipOps, uid: string): Promise<KmipKeyState> {
    let info: KmipKeyState;
    try {
      info = await c.getAttributes(uid);
    } catch (err) {
      // unreachable, refused (client certificate) and known errors keep their code and message
      if (isAtrestError(err)) throw err;
      throw this.unavailable(t, `key ${uid}`, `(${(err as Error).message})`);
    }
    if (!this.ours(t, info)) {
      throw new AtrestError(
        'KEY_UNAVAILABLE',
        `KMIP key ${uid} on ${this.address(t)} is not the key of provider ${t.name}`,
        { hint: 'the token names another key; unlock with a recovery keyslot' },
      );
    }
    if (info.state !== 'active') throw this.unavailable(t, `key ${uid}`, `is ${info.state}`);
    return info;
  }

  /** Every key of the target with its attributes (the one uid, or all named keyName). */
  private async keys(t: KmipTarget, c: KmipOps): Promise<KmipKeyState[]> {
    const uids = t.uid !== undefined ? [t.uid] : await c.locate(t.keyName ?? t.name);
    const out: KmipKeyState[] = [];
    for (const uid of uids) {
      try {
        const info = await c.getAttributes(uid);
        if (this.ours(t, info)) out.push(info);
      } catch (err) {
        if (isUnreachable(err)) throw err;
        // a key that vanished between Locate and Get Attributes is not a candidate
      }
    }
    return out;
  }

  async current(uri: string): Promise<KekRef> {
    const t = this.target(uri);
    const keys = await this.call(t, (c) => this.keys(t, c));
    const best = newestActive(keys);
    if (best === undefined) {
      throw this.unavailable(
        t,
        t.uid !== undefined ? `key ${t.uid}` : `key named ${JSON.stringify(t.keyName ?? t.name)}`,
        keys.length === 0 ? 'not found' : 'has no active version',
      );
    }
    return { uri, keyId: best.uid, version: best.version ?? 1 };
  }

  async wrap(ref: KekRef, secret: Uint8Array): Promise<Buffer> {
    const t = this.target(ref.uri);
    const out = await this.call(t, async (c) => {
      await this.checked(t, c, ref.keyId);
      return c.encrypt(ref.keyId, secret);
    });
    return packBlob(out.iv, out.data);
  }

  async unwrap(ref: KekRef, wrapped: Uint8Array): Promise<Buffer> {
    const t = this.target(ref.uri);
    const { iv, data } = unpackBlob(wrapped);
    const secret = await this.call(t, async (c) => {
      await this.checked(t, c, ref.keyId);
      try {
        return await c.decrypt(ref.keyId, data, iv);
      } catch (err) {
        if (isAtrestError(err) && (err.code === 'KEY_UNAVAILABLE' || err.code.startsWith('KEY_SERVER_')))
          throw err;
        throw new AtrestError(
          'WRONG_KEY',
          `KMIP key ${ref.keyId} (provider ${t.name}) does not unwrap this key`,
          {
            cause: err,
          },
        );
      }
    });
    if (secret.length !== SECRET_LEN) {
      secret.fill(0);
      throw new AtrestError(
        'WRONG_KEY',
        `KMIP key ${ref.keyId} (provider ${t.name}) does not unwrap this key`,
      );
    }
    return secret;
  }

  /** Active on the server: true; revoked, deactivated, destroyed, unknown, refused: false; unreachable: throws. */
  async available(ref: KekRef): Promise<boolean> {
    const t = this.target(ref.uri);
    try {
      await this.call(t, (c) => this.checked(t, c, ref.keyId));
      return true;
    } catch (err) {
      if (isUnreachable(err)) throw err;
      return false;
    }
  }

  /**
   * For `key use`: the target's newest active key, made active when only a pre-active one exists, or
   * created (AES-256, version 1) and activated when the server has none. Keys that are all revoked or
   * destroyed are not replaced: that is the administrator's decision on the server.
   */
  async ensureKey(uri: string): Promise<{ ref: KekRef; created: boolean }> {
    const t = this.target(uri);
    return this.call(t, async (c) => {
      const keys = await this.keys(t, c);
      const best = newestActive(keys);
      if (best !== undefined)
        return { ref: { uri, keyId: best.uid, version: best.version ?? 1 }, created: false };
      const pre = newest(keys.filter((k) => k.state === 'pre-active'));
      if (pre !== undefined) {
        await c.activate(pre.uid);
        return { ref: { uri, keyId: pre.uid, version: pre.version ?? 1 }, created: false };
      }
      if (keys.length > 0 || t.uid !== undefined) {
        throw this.unavailable(
          t,
          t.uid !== undefined ? `key ${t.uid}` : `key named ${JSON.stringify(t.keyName ?? t.name)}`,
          keys.length === 0 ? 'not found' : `has no active version (${keys.map((k) => k.state).join(', ')})`,
        );
      }
      const version = 1;
      const uid = await c.create(t.keyName ?? t.name, version);
      await c.activate(uid);
      return { ref: { uri, keyId: uid, version }, created: true };
    });
  }

  /** Revokes every active or pre-active key of the target (or one version). Returns the uids revoked. */
  async revoke(
    uri: string,
    opts: { version?: number; reason?: 'key-compromise' | 'cessation-of-operation' } = {},
  ): Promise<string[]> {
    const t = this.target(uri);
    return this.call(t, async (c) => {
      const keys = (await this.keys(t, c)).filter(
        (k) => opts.version === undefined || (k.version ?? 1) === opts.version,
      );
      if (keys.length === 0) {
        throw this.unavailable(
          t,
          `key named ${JSON.stringify(t.keyName ?? t.name)}${opts.version === undefined ? '' : ` version ${opts.version}`}`,
          'not found',
        );
      }
      const done: string[] = [];
      for (const k of keys) {
        if (k.state !== 'active' && k.state !== 'pre-active') continue; // already revoked or destroyed
        await c.revoke(k.uid, opts.reason ?? 'cessation-of-operation');
        done.push(k.uid);
      }
      return done;
    });
  }

  /** Closes every client (their pooled connections). */
  async close(): Promise<void> {
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.allSettled(all.map((x) => x.c.close()));
  }
}

function newest(keys: KmipKeyState[]): KmipKeyState | undefined {
  let best: KmipKeyState | undefined;
  for (const k of keys) if (best === undefined || (k.version ?? 1) > (best.version ?? 1)) best = k;
  return best;
}

function newestActive(keys: KmipKeyState[]): KmipKeyState | undefined {
  return newest(keys.filter((k) => k.state === 'active'));
}

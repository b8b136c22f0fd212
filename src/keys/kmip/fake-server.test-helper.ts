// Tests only: an in-memory KMIP server behind the KmipOps interface (keys never leave it; down, hang and restart switches).
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { AtrestError } from '../../errors/index.js';
import { UNREACHABLE_CODE, type KmipConnection, type KmipKeyState, type KmipOps } from './provider.js';

/** TLS material for KmipProviderOptions.readTls (nothing is read from disk). */
export function fakeTls(): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  return Promise.resolve({ ca: Buffer.from('CA'), cert: Buffer.from('C'), key: Buffer.from('K') });
}

interface FakeKey {
  name: string;
  version: number;
  state: string;
  key: Buffer;
}

export function unreachableError(): Error {
  return new AtrestError(UNREACHABLE_CODE, 'connect ECONNREFUSED');
}

/** An in-memory KMIP server: AES-256-CBC Encrypt/Decrypt with keys that never leave it. */
export class FakeKmipServer {
  readonly keys = new Map<string, FakeKey>();
  down = false;
  connects = 0;
  decrypts = 0;
  /** Every operation hangs (a server that accepts connections and never answers). */
  hang = false;
  private next = 1;

  add(name: string, version: number, state = 'active'): string {
    const uid = String(this.next++);
    this.keys.set(uid, { name, version, state, key: randomBytes(32) });
    return uid;
  }

  connect = (ep: KmipConnection): KmipOps => {
    this.connects++;
    if (ep.ca.toString() !== 'CA') throw new Error('fake server: unexpected CA');
    /** Runs one operation: unreachable while down, never settles while hanging. */
    const op = <T>(fn: () => T): Promise<T> =>
      this.hang
        ? new Promise<T>(() => undefined)
        : Promise.resolve().then(() => {
            if (this.down) throw unreachableError();
            return fn();
          });
    const get = (uid: string): FakeKey => {
      const k = this.keys.get(uid);
      if (k === undefined) throw new AtrestError('KEY_UNAVAILABLE', `item ${uid} not found`);
      return k;
    };
    const usable = (uid: string): FakeKey => {
      const k = get(uid);
      if (k.state !== 'active') throw new AtrestError('KEY_UNAVAILABLE', `key ${uid} is ${k.state}`);
      return k;
    };
    return {
      create: (name, version) => op(() => this.add(name, version, 'pre-active')),
      activate: (uid) =>
        op(() => {
          get(uid).state = 'active';
        }),
      locate: (name) => op(() => [...this.keys].filter(([, k]) => k.name === name).map(([u]) => u)),
      getAttributes: (uid): Promise<KmipKeyState> =>
        op(() => {
          const k = get(uid);
          return { uid, state: k.state, name: k.name, version: k.version };
        }),
      encrypt: (uid, data) =>
        op(() => {
          const iv = randomBytes(16);
          const c = createCipheriv('aes-256-cbc', usable(uid).key, iv);
          return { data: Buffer.concat([c.update(data), c.final()]), iv };
        }),
      decrypt: (uid, data, iv) =>
        op(() => {
          this.decrypts++;
          const d = createDecipheriv('aes-256-cbc', usable(uid).key, iv);
          try {
            return Buffer.concat([d.update(data), d.final()]);
          } catch {
            throw new AtrestError('IO', 'cryptographic failure');
          }
        }),
      revoke: (uid, reason) =>
        op(() => {
          get(uid).state = reason === 'key-compromise' ? 'compromised' : 'deactivated';
        }),
      close: () => Promise.resolve(),
    };
  };
}

// KmipClient against a real KMIP server (pykmip-server, issue 13): key life cycle, server-side GCM wrap and
// unwrap, revocation, a refused client certificate and a server that is down.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer as createTlsServer } from 'node:tls';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AtrestError } from '../src/errors/index.js';
import { KmipClient } from '../src/keys/kmip/client.js';
import { Operation, Tag } from '../src/keys/kmip/tags.js';
import { encodeTtlv, enumeration, struct } from '../src/keys/kmip/ttlv.js';
import { startKmipServer, type KmipTestServer } from './helpers/kmip-server.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '..');

async function failure(p: Promise<unknown>): Promise<AtrestError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AtrestError);
  const e = err as AtrestError;
  expect(e.oneLine()).not.toContain('\n');
  return e;
}

describe('KmipClient with pykmip-server', () => {
  let srv: KmipTestServer;
  let client: KmipClient;

  beforeAll(async () => {
    srv = await startKmipServer();
    client = new KmipClient(srv.endpoint(30_000));
  });
  afterAll(async () => {
    await client?.close();
    await srv?.cleanup();
  });

  it('creates, activates, locates and reports a key with its name and version', async () => {
    const uid = await client.create('vol-a', 1);
    expect(await client.getAttributes(uid)).toEqual({ uid, state: 'pre-active', name: 'vol-a', version: 1 });
    await client.activate(uid);
    expect((await client.getAttributes(uid)).state).toBe('active');
    const uid2 = await client.create('vol-a', 2);
    expect(uid2).not.toBe(uid);
    expect((await client.getAttributes(uid2)).version).toBe(2);
    expect((await client.locate('vol-a')).sort()).toEqual([uid, uid2].sort());
    expect(await client.locate('no-such-key')).toEqual([]);
    expect(await client.versions('vol-a')).toEqual([
      { uid: uid2, state: 'pre-active', name: 'vol-a', version: 2 },
      { uid, state: 'active', name: 'vol-a', version: 1 },
    ]);
  });

  it('wraps and unwraps 32 bytes on the server (AES-GCM, IV travels with the result)', async () => {
    const uid = await client.create('vol-b', 1);
    await client.activate(uid);
    const secret = Buffer.from('00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef', 'hex');
    const w = await client.encrypt(uid, secret);
    expect(w.iv.length).toBe(12);
    expect(w.data.length).toBe(32 + 16);
    expect(w.data.subarray(0, 32).equals(secret)).toBe(false);
    const back = await client.decrypt(uid, w.data, w.iv);
    expect(back.equals(secret)).toBe(true);
    // A second wrap of the same secret uses a fresh IV.
    const w2 = await client.encrypt(uid, secret);
    expect(w2.iv.equals(w.iv)).toBe(false);
    // A damaged token does not decrypt (pykmip reports General Failure for a GCM tag mismatch).
    const bad = Buffer.from(w.data);
    bad[0]! ^= 1;
    const e = await failure(client.decrypt(uid, bad, w.iv));
    expect(['KEY_SERVER_ERROR', 'WRONG_KEY']).toContain(e.code);
  });

  it('refuses to unwrap with a revoked key and reports its state', async () => {
    const uid = await client.create('vol-c', 1);
    await client.activate(uid);
    const w = await client.encrypt(uid, Buffer.alloc(32, 9));
    await client.revoke(uid);
    expect(await client.getAttributes(uid)).toMatchObject({ uid, state: 'deactivated' });
    const e = await failure(client.decrypt(uid, w.data, w.iv));
    expect(e.code).toBe('KEY_UNAVAILABLE');
    expect(e.message).toContain(`127.0.0.1:${srv.port}`);
    await client.revoke(uid, 'key-compromise');
    expect((await client.getAttributes(uid)).state).toBe('compromised');
    expect((await failure(client.encrypt(uid, Buffer.alloc(32)))).code).toBe('KEY_UNAVAILABLE');
    expect((await failure(client.getAttributes('no-such-uid'))).code).toBe('KEY_UNAVAILABLE');
  });

  it("lets another certificate with the creator's identity use a key, and not another identity", async () => {
    const uid = await client.create('vol-f', 1);
    await client.activate(uid);
    const w = await client.encrypt(uid, Buffer.alloc(32, 4));
    const sameCn = srv.makeClientCert('client');
    const host2 = new KmipClient({ ...srv.endpoint(30_000), cert: sameCn.cert, key: sameCn.key });
    expect(await host2.locate('vol-f')).toEqual([uid]);
    expect((await host2.decrypt(uid, w.data, w.iv)).equals(Buffer.alloc(32, 4))).toBe(true);
    const stranger = srv.makeClientCert('someone-else');
    const other = new KmipClient({ ...srv.endpoint(30_000), cert: stranger.cert, key: stranger.key });
    expect(await other.locate('vol-f')).toEqual([]);
    expect((await failure(other.decrypt(uid, w.data, w.iv))).code).toBe('KEY_UNAVAILABLE');
    await host2.close();
    await other.close();
  });

  it('says clearly when the server refuses the client certificate', async () => {
    const other = srv.makeClientCert('intruder', { otherCa: true });
    const c1 = new KmipClient({ ...srv.endpoint(30_000), cert: other.cert, key: other.key });
    const e1 = await failure(c1.locate('vol-a'));
    expect(e1.code).toBe('KEY_SERVER_REFUSED');
    expect(e1.message).toMatch(/refused this host's client certificate/);
    expect(e1.message).toContain(`127.0.0.1:${srv.port}`);

    // The server's certificate checked against another CA: refused on this side, also a clear error.
    const otherCa = readFileSync(join(srv.dir, 'other-ca.pem'));
    const e3 = await failure(new KmipClient({ ...srv.endpoint(30_000), ca: otherCa }).locate('vol-a'));
    expect(e3.code).toBe('KEY_SERVER_REFUSED');
    expect(e3.message).toMatch(/certificate of key server 127\.0\.0\.1:\d+ is not trusted/);

    // A key that does not belong to the certificate: a configuration error, said before any connection.
    const e4 = await failure(new KmipClient({ ...srv.endpoint(30_000), key: other.key }).locate('vol-a'));
    expect(e4.code).toBe('USAGE');
    expect(e4.message).toMatch(/cannot use the client certificate or key/);
    expect(e4.message).not.toContain('PRIVATE KEY');

    const noAuth = srv.makeClientCert('no-client-auth', { clientAuth: false });
    const c2 = new KmipClient({ ...srv.endpoint(30_000), cert: noAuth.cert, key: noAuth.key });
    const e2 = await failure(c2.locate('vol-a'));
    expect(e2.code).toBe('KEY_SERVER_REFUSED');
    expect(e2.message).toMatch(/Authentication Not Successful/);
  });

  it('reports an unreachable server by address within the timeout, and works again after a restart', async () => {
    const uid = await client.create('vol-d', 1);
    await client.activate(uid);
    const w = await client.encrypt(uid, Buffer.alloc(32, 5));
    await srv.stop({ kill: true }); // like a crash: the key must survive it in the server's database
    const timeoutMs = 3000;
    const down = new KmipClient(srv.endpoint(timeoutMs));
    const t0 = Date.now();
    const e = await failure(down.decrypt(uid, w.data, w.iv));
    expect(Date.now() - t0).toBeLessThan(timeoutMs + 5000);
    expect(e.code).toBe('KEY_SERVER_UNREACHABLE');
    expect(e.message).toContain(`127.0.0.1:${srv.port}`);
    await srv.start();
    expect((await client.decrypt(uid, w.data, w.iv)).equals(Buffer.alloc(32, 5))).toBe(true);
  });

  it('runs calls in parallel over a few reused connections', async () => {
    const uid = await client.create('vol-e', 1);
    await client.activate(uid);
    const w = await client.encrypt(uid, Buffer.alloc(32, 3));
    const two = new KmipClient({ ...srv.endpoint(60_000), maxConnections: 2 });
    const outs = await Promise.all(Array.from({ length: 12 }, () => two.decrypt(uid, w.data, w.iv)));
    for (const o of outs) expect(o.equals(Buffer.alloc(32, 3))).toBe(true);
    await two.close();
    await expect(two.locate('vol-e')).rejects.toThrow(/after close/);
  });

  it('retries once on a fresh connection when the server dropped a reused one without answering', async () => {
    // A TLS server with the test server's certificate that answers the first request on each connection
    // with an empty Locate result, and closes the connection on the second one without answering.
    const answer = encodeTtlv(
      struct(
        Tag.ResponseMessage,
        struct(Tag.ResponseHeader),
        struct(Tag.BatchItem, enumeration(Tag.Operation, Operation.Locate), enumeration(Tag.ResultStatus, 0)),
      ),
    );
    let connections = 0;
    const fake = createTlsServer(
      {
        cert: readFileSync(join(srv.dir, 'server.pem')),
        key: readFileSync(join(srv.dir, 'server.key')),
        ca: srv.ca,
        requestCert: true,
      },
      (sock) => {
        connections++;
        let requests = 0;
        sock.on('data', () => {
          if (++requests === 1) sock.write(answer);
          else sock.destroy();
        });
        sock.on('error', () => undefined);
      },
    );
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const port = (fake.address() as { port: number }).port;
    try {
      const c = new KmipClient({ ...srv.endpoint(30_000), port, maxConnections: 1 });
      expect(await c.locate('x')).toEqual([]);
      expect(await c.locate('x')).toEqual([]); // the reused connection is dropped; the retry gets an answer
      expect(connections).toBe(2);
      await c.close();
    } finally {
      fake.close();
    }
  });

  it('reports a server that answers with something other than KMIP as KEY_SERVER_ERROR, at once', async () => {
    const answers: [string, Buffer, RegExp][] = [
      ['HTTP', Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'), /outside the KMIP ranges/],
      ['a 2 GiB length', Buffer.from('42007b017ffffff8', 'hex'), /exceeds the 1048576-byte limit/],
      [
        'a truncated item',
        Buffer.from('42007b0100000010' + '42007a0100000040' + '00'.repeat(8), 'hex'),
        /runs past/,
      ],
      [
        'trailing bytes',
        Buffer.concat([Buffer.from('42007b0100000000', 'hex'), Buffer.alloc(8)]),
        /bytes after/,
      ],
    ];
    for (const [what, answer, msg] of answers) {
      const fake = createTlsServer(
        {
          cert: readFileSync(join(srv.dir, 'server.pem')),
          key: readFileSync(join(srv.dir, 'server.key')),
          ca: srv.ca,
          requestCert: true,
        },
        (sock) => {
          sock.on('data', () => sock.write(answer)); // and keep the connection open
          sock.on('error', () => undefined);
        },
      );
      await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
      const port = (fake.address() as { port: number }).port;
      try {
        const t0 = Date.now();
        const e = await failure(new KmipClient({ ...srv.endpoint(60_000), port }).locate('x'));
        expect(e.code, what).toBe('KEY_SERVER_ERROR');
        expect(e.message, what).toMatch(msg);
        expect(Date.now() - t0, what).toBeLessThan(30_000); // not the 60 s deadline
      } finally {
        fake.close();
      }
    }
  });

  it('does not keep a process alive with its idle connection', async () => {
    const script = join(srv.dir, 'one-call.mts');
    await writeFile(
      script,
      [
        `import { KmipClient } from ${JSON.stringify(join(ROOT, 'src/keys/kmip/client.ts'))};`,
        `const ep = ${JSON.stringify({ host: srv.host, port: srv.port, caPath: srv.caPath, ...srv.client })};`,
        `import { readFileSync } from 'node:fs';`,
        `const c = new KmipClient({ host: ep.host, port: ep.port, ca: readFileSync(ep.caPath), cert: readFileSync(ep.certPath), key: readFileSync(ep.keyPath), idleMs: 120000 });`,
        `console.log(JSON.stringify(await c.locate('vol-a')));`,
      ].join('\n'),
    );
    const t0 = Date.now();
    const { stdout } = await run(process.execPath, ['--import', 'tsx', script], {
      cwd: ROOT,
      timeout: 90_000,
    });
    expect(JSON.parse(stdout)).toHaveLength(2);
    expect(Date.now() - t0).toBeLessThan(60_000); // well before the 120 s idle timeout
  });

  it('times out on a server that accepts but never answers, naming the address', async () => {
    const { createServer } = await import('node:net');
    const silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    try {
      const c = new KmipClient({ ...srv.endpoint(1500), port });
      const t0 = Date.now();
      const e = await failure(c.locate('x'));
      expect(e.code).toBe('KEY_SERVER_UNREACHABLE');
      expect(e.message).toContain(`127.0.0.1:${port}`);
      expect(e.message).toMatch(/no answer within 1500 ms/);
      expect(Date.now() - t0).toBeLessThan(1500 + 5000);
    } finally {
      silent.close();
    }
  });
});

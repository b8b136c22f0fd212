// A private, real KMIP server for tests and the benchmark: Debian's pykmip-server (python3-pykmip 0.10) on
// 127.0.0.1 with a test CA, server and client certificates made by openssl in a temp dir, its own config,
// policy dir and SQLite database there. stop()/start() for down/up tests; cleanup() kills it and removes the dir.
//
// pykmip-server 0.10 quirks this works around or documents:
// - Its default config (/etc/pykmip/server.conf) and database (/tmp/pykmip.database) are shared paths: we
//   pass `-f` with our own server.conf (database_path, policy_path in the temp dir) and `-l` for the log.
// - At logging_level DEBUG it logs every request in hex, including the plaintext of Encrypt requests: the
//   harness runs it at INFO.
// - It requires extendedKeyUsage clientAuth on client certificates (enable_tls_client_auth) and answers a
//   certificate without it with Result Reason "Authentication Not Successful"; a certificate from another
//   CA is refused in the TLS handshake (alert "unknown ca").
// - It uses ssl.wrap_socket with PROTOCOL_TLSv1_2 (auth_suite TLS1.2): TLS 1.2 only, and it would not run on
//   Python >= 3.12 (wrap_socket removed); Debian 12's python3 is 3.11. The cryptography module prints
//   deprecation warnings (Blowfish, CAST5, IDEA) on stderr at start: harmless.
// - listen() backlog is 5 and every connection gets its own thread: keep client concurrency modest.
// - A GCM tag mismatch on Decrypt is an unhandled exception in its crypto engine: the result is General
//   Failure, not Cryptographic Failure.
// - Nothing makes Name unique across objects, so several key versions can share a Name.
// - Access control: the client identity is the certificate's common name; under the default operation
//   policy only the creator's CN may use or even locate a key (another CN gets Permission Denied / nothing
//   found). Hosts of one fleet therefore share a CN here (or need a pykmip operation policy).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import type { KmipEndpoint } from '../../src/keys/kmip/transport.js';

export const PYKMIP_SERVER = '/usr/bin/pykmip-server';
export const HOST = '127.0.0.1';

export interface CertPair {
  certPath: string;
  keyPath: string;
  cert: Buffer;
  key: Buffer;
}

export interface KmipTestServer {
  host: string;
  port: number;
  dir: string;
  caPath: string;
  ca: Buffer;
  /** The default client certificate (signed by the test CA, extendedKeyUsage clientAuth). */
  client: CertPair;
  /** An endpoint for KmipClient with the default client certificate. */
  endpoint(timeoutMs?: number): KmipEndpoint;
  /**
   * Another client certificate with common name `name`, signed by the test CA with clientAuth unless
   * `otherCa` (a second CA the server does not trust) or `clientAuth: false` (no extendedKeyUsage at all: TLS
   * accepts it, pykmip then refuses it). The CN is pykmip's client identity: under its default operation
   * policy a key is usable only with its creator's CN, so another host of the same fleet is
   * `makeClientCert('client')`.
   */
  makeClientCert(name: string, opts?: { otherCa?: boolean; clientAuth?: boolean }): CertPair;
  readonly running: boolean;
  /**
   * Stops the server (SIGINT, then SIGKILL to its process group; pykmip waits for open sessions, so this can
   * take seconds while a client holds a connection). `{ kill: true }`: SIGKILL at once, like a crash. The
   * database and certificates stay.
   */
  stop(opts?: { kill?: boolean }): Promise<void>;
  /** Starts it again on the same port with the same database; resolves when it accepts TLS. */
  start(): Promise<void>;
  /** The last lines of the server's log (for failing tests). */
  logTail(lines?: number): string;
  /** stop() and remove the temp dir. */
  cleanup(): Promise<void>;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}

const EXTENSIONS = `[ca]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:false
subjectAltName = IP:127.0.0.1,DNS:localhost
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
[client]
basicConstraints = CA:false
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
[client_noauth]
basicConstraints = CA:false
keyUsage = critical,digitalSignature,keyEncipherment
`;

function makeCa(dir: string, name: string): void {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  openssl(dir, [
    'req', '-x509', '-new', '-key', `${name}.key`, '-out', `${name}.pem`, '-days', '3',
    '-subj', `/CN=atrest test ${name}`, '-config', 'ext.cnf', '-extensions', 'ca',
  ]); // prettier-ignore
}

function makeCert(dir: string, ca: string, name: string, ext: string, cn = name): CertPair {
  openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`]);
  openssl(dir, ['req', '-new', '-key', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
  openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial',
    '-out', `${name}.pem`, '-days', '3', '-extfile', 'ext.cnf', '-extensions', ext,
  ]); // prettier-ignore
  const certPath = join(dir, `${name}.pem`);
  const keyPath = join(dir, `${name}.key`);
  return { certPath, keyPath, cert: readFileSync(certPath), key: readFileSync(keyPath) };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Whether a full TLS handshake with the client certificate succeeds within `ms`. */
function handshake(port: number, ca: Buffer, client: CertPair, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: HOST, port, ca, cert: client.cert, key: client.key, minVersion: 'TLSv1.2' });
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      resolve(ok);
    };
    const t = setTimeout(() => done(false), ms);
    s.once('secureConnect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Signals the server's whole process group (it forks a multiprocessing manager and a policy monitor). */
function killGroup(c: ChildProcess, sig: NodeJS.Signals): void {
  try {
    if (c.pid !== undefined) process.kill(-c.pid, sig);
  } catch {
    // already gone
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) killGroup(c, 'SIGKILL');
});

/** Starts a private pykmip-server and resolves when it completes TLS handshakes. */
export async function startKmipServer(
  opts: { port?: number; startTimeoutMs?: number } = {},
): Promise<KmipTestServer> {
  if (!existsSync(PYKMIP_SERVER))
    throw new Error(
      `${PYKMIP_SERVER} is missing: install the Debian package python3-pykmip (scripts/setup does)`,
    );
  const dir = mkdtempSync(join(tmpdir(), 'atrest-kmip-'));
  writeFileSync(join(dir, 'ext.cnf'), EXTENSIONS);
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  makeCert(dir, 'ca', 'server', 'server');
  const client = makeCert(dir, 'ca', 'client', 'client');
  const policies = join(dir, 'policies');
  mkdirSync(policies, { mode: 0o700 });
  const port = opts.port ?? (await freePort());
  const conf = join(dir, 'server.conf');
  const log = join(dir, 'server.log');
  writeFileSync(
    conf,
    [
      '[server]',
      `hostname=${HOST}`,
      `port=${port}`,
      `certificate_path=${join(dir, 'server.pem')}`,
      `key_path=${join(dir, 'server.key')}`,
      `ca_path=${join(dir, 'ca.pem')}`,
      'auth_suite=TLS1.2',
      `policy_path=${policies}`,
      'enable_tls_client_auth=True',
      'logging_level=INFO',
      `database_path=${join(dir, 'pykmip.sqlite')}`,
      '',
    ].join('\n'),
  );
  const caPath = join(dir, 'ca.pem');
  let extraCerts = 0;
  const ca = readFileSync(caPath);
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  let child: ChildProcess | undefined;
  let stderr = '';

  const stop = async (stopOpts: { kill?: boolean } = {}): Promise<void> => {
    const c = child;
    if (!c) return;
    child = undefined;
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise<void>((r) => c.once('exit', () => r()));
      // SIGINT to the server alone: it raises KeyboardInterrupt out of accept() and shuts down its
      // multiprocessing helpers in order. (SIGTERM only sets a flag that accept() checks after its socket
      // timeout; a signal to the whole group kills the manager first and leaves the server hanging.)
      if (stopOpts.kill) killGroup(c, 'SIGKILL');
      else c.kill('SIGINT');
      const t = setTimeout(() => killGroup(c, 'SIGKILL'), 8000);
      await exited;
      clearTimeout(t);
    }
    killGroup(c, 'SIGKILL'); // its forked helpers, if any outlived it
    live.delete(c);
  };

  const start = async (): Promise<void> => {
    if (child) return;
    stderr = '';
    const c = spawn(PYKMIP_SERVER, ['-f', conf, '-l', log], {
      cwd: dir,
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true, // its own process group, so stop() also reaches the processes it forks
    });
    child = c;
    live.add(c);
    c.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-4000);
    });
    const deadline = Date.now() + startTimeoutMs;
    while (Date.now() < deadline) {
      if (c.exitCode !== null || c.signalCode !== null) break;
      if (await handshake(port, ca, client, 2000)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    const why =
      c.exitCode !== null ? `exited with ${c.exitCode}` : `not accepting TLS after ${startTimeoutMs} ms`;
    await stop();
    throw new Error(`pykmip-server on ${HOST}:${port} ${why}\n${stderr}\n${tail(log, 30)}`);
  };

  const tail = (file: string, lines: number): string => {
    try {
      return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  };

  const server: KmipTestServer = {
    host: HOST,
    port,
    dir,
    caPath,
    ca,
    client,
    endpoint: (timeoutMs?: number) => ({
      host: HOST,
      port,
      ca,
      cert: client.cert,
      key: client.key,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
    }),
    makeClientCert: (name, o = {}) =>
      makeCert(
        dir,
        o.otherCa ? 'other-ca' : 'ca',
        `extra-${++extraCerts}`,
        o.clientAuth === false ? 'client_noauth' : 'client',
        name,
      ),
    get running() {
      return child !== undefined;
    },
    stop,
    start,
    logTail: (lines = 40) => tail(log, lines),
    cleanup: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return server;
}

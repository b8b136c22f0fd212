import { Buffer } from 'node:buffer';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AtrestError } from '../errors/index.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { requestWithSecrets } from './client.js';
import { encodeFrame, FrameReader, MAX_LINE_BYTES, writeFrame, type Frame } from './framing.js';
import { runtimePaths } from './paths.js';
import { parseEnvelope } from './protocol.js';
import { Daemon } from './server.js';

/** A secret with newlines, NULs, a byte that is not UTF-8 and a JSON-looking tail. */
const SECRET = Buffer.concat([
  Buffer.from('pass\nphrase\0with\r\n'),
  Buffer.from([0x00, 0xff, 0xfe, 0x0a, 0x0a, 0x00]),
  Buffer.from('"}\n{"id":9}\n'),
]);
const MARK = Buffer.from('phrase\0with');
const realAlloc = Buffer.alloc.bind(Buffer);

function collect(): { frames: Frame[]; errors: AtrestError[]; reader: FrameReader } {
  const frames: Frame[] = [];
  const errors: AtrestError[] = [];
  const reader = new FrameReader(
    (f) => frames.push(f),
    (e) => errors.push(e),
  );
  return { frames, errors, reader };
}

/** Feeds `bytes` to a fresh reader cut at `cuts`, each chunk a fresh Buffer (as a socket gives them). */
function feed(bytes: Buffer, cuts: number[]): ReturnType<typeof collect> & { chunks: Buffer[] } {
  const c = collect();
  const chunks: Buffer[] = [];
  let last = 0;
  for (const cut of [...cuts, bytes.length]) {
    const chunk = Buffer.from(bytes.subarray(last, cut));
    chunks.push(chunk);
    c.reader.push(chunk);
    last = cut;
  }
  c.reader.end();
  return { ...c, chunks };
}

describe('control-socket framing', () => {
  it('round-trips a message with no secrets as one plain JSON line', () => {
    const bytes = encodeFrame({ id: 1, request: { op: 'status' } });
    expect(bytes.toString('utf8')).toBe('{"id":1,"request":{"op":"status"}}\n');
    const { frames, errors } = feed(Buffer.concat([bytes, bytes]), []);
    expect(errors).toEqual([]);
    expect(frames).toHaveLength(2);
    expect(frames[0]).toEqual({ message: { id: 1, request: { op: 'status' } }, secrets: [] });
  });

  it('carries secrets with newlines and NULs as raw bytes after the line, split across chunks anywhere', () => {
    const other = Buffer.from([0, 0, 10, 0]);
    const bytes = Buffer.concat([
      encodeFrame({ id: 7, request: { op: 'open' } }, [SECRET, other]),
      encodeFrame({ id: 8, request: { op: 'status' } }),
    ]);
    // the JSON line holds only the lengths
    const line = bytes.subarray(0, bytes.indexOf(0x0a) + 1).toString('utf8');
    expect(JSON.parse(line)).toEqual({ id: 7, request: { op: 'open' }, secretLengths: [SECRET.length, 4] });
    const cutsList: number[][] = [[], ...Array.from({ length: bytes.length - 1 }, (_, i) => [i + 1])];
    cutsList.push(Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)); // one byte at a time
    for (const cuts of cutsList) {
      const { frames, errors, chunks } = feed(bytes, cuts);
      expect(errors).toEqual([]);
      expect(frames).toHaveLength(2);
      expect(frames[0]?.message).toEqual({ id: 7, request: { op: 'open' } });
      expect(frames[0]?.secrets.map((s) => s.toString('hex'))).toEqual([SECRET.toString('hex'), '00000a00']);
      expect(frames[1]).toEqual({ message: { id: 8, request: { op: 'status' } }, secrets: [] });
      // every chunk handed to the reader is zeroed once consumed
      for (const c of chunks) expect(c.every((b) => b === 0)).toBe(true);
    }
  });

  it('never parses or decodes secret bytes', () => {
    const parse = vi.spyOn(JSON, 'parse');
    const toString = vi.spyOn(Buffer.prototype, 'toString');
    try {
      const bytes = encodeFrame({ id: 1, request: { op: 'open' } }, [SECRET]);
      const long = Buffer.concat([encodeFrame({ id: 2 }, [SECRET]).subarray(0, -1), Buffer.from('xx\n')]);
      for (const b of [bytes, long]) {
        for (let cut = 1; cut < b.length; cut += 3) feed(b, [cut]);
      }
      for (const [text] of parse.mock.calls) expect(String(text)).not.toContain('phrase');
      for (const r of toString.mock.contexts) expect((r as Buffer).includes(MARK)).toBe(false);
    } finally {
      parse.mockRestore();
      toString.mockRestore();
    }
  });

  it('a wrong announced length is a typed error, and the partial secret is wiped', () => {
    const allocs: Buffer[] = [];
    const alloc = vi.spyOn(Buffer, 'alloc');
    alloc.mockImplementation((...args: Parameters<typeof Buffer.alloc>) => {
      const b = realAlloc(...args);
      allocs.push(b);
      return b;
    });
    try {
      // announced longer than sent: the stream ends inside the secret
      const head = Buffer.from(`{"id":1,"request":{"op":"open"},"secretLengths":[${SECRET.length + 5}]}\n`);
      let r = feed(Buffer.concat([head, SECRET]), [head.length + 3]);
      expect(r.frames).toEqual([]);
      expect(r.errors).toHaveLength(1);
      expect(r.errors[0]).toBeInstanceOf(AtrestError);
      expect(r.errors[0]?.code).toBe('USAGE');
      expect(r.errors[0]?.message).toMatch(/announced \d+ secret bytes but the connection ended after \d+/);
      const partial = allocs.filter((b) => b.length === SECRET.length + 5);
      expect(partial.length).toBeGreaterThan(0);
      for (const b of partial) expect(b.every((x) => x === 0)).toBe(true);

      // announced shorter than sent: the byte after the secret is not the closing newline
      const short = Buffer.from(`{"id":1,"request":{"op":"open"},"secretLengths":[${SECRET.length - 6}]}\n`);
      r = feed(Buffer.concat([short, SECRET, Buffer.from('\n{"id":2,"request":{"op":"ping"}}\n')]), []);
      expect(r.frames).toEqual([]);
      expect(r.errors.map((e) => e.message)).toEqual([
        expect.stringMatching(/secrets are longer than the \d+ bytes announced/),
      ]);
      for (const b of allocs.filter((x) => x.length === SECRET.length - 6)) {
        expect(b.every((x) => x === 0)).toBe(true);
      }
    } finally {
      alloc.mockRestore();
    }
  });

  it('refuses bad secretLengths, non-objects, non-JSON and over-long lines with typed errors', () => {
    for (const [line, why] of [
      ['{"id":1,"secretLengths":"12"}\n', /secretLengths must be/],
      ['{"id":1,"secretLengths":[-1]}\n', /secretLengths must be/],
      ['{"id":1,"secretLengths":[1.5]}\n', /secretLengths must be/],
      [`{"id":1,"secretLengths":[${2 ** 40}]}\n`, /secretLengths must be/],
      ['[1,2]\n', /not a JSON object/],
      ['{"id":\n', /not JSON/],
    ] as const) {
      const r = feed(Buffer.from(line), []);
      expect(r.frames).toEqual([]);
      expect(r.errors.map((e) => [e.code, e.message])).toEqual([['USAGE', expect.stringMatching(why)]]);
    }
    const r = feed(Buffer.alloc(MAX_LINE_BYTES + 10, 0x20), [MAX_LINE_BYTES - 5]);
    expect(r.errors.map((e) => e.message)).toEqual([expect.stringMatching(/longer than/)]);
    // after an error the reader takes nothing more
    const c = collect();
    c.reader.push(Buffer.from('nope\n{"id":1}\n'));
    expect(c.frames).toEqual([]);
    expect(c.errors).toHaveLength(1);
  });

  it('writeFrame zeroes its encoded copy once the socket took it; encodeFrame refuses bytes inside the JSON', async () => {
    let written: Uint8Array | null = null;
    let copy: Buffer | null = null;
    let done: (() => void) | null = null;
    const sink = {
      write(data: Uint8Array, cb: (err?: Error | null) => void): boolean {
        written = data;
        copy = Buffer.from(data);
        done = () => cb();
        return true;
      },
    };
    const p = writeFrame(sink, { id: 3, ok: true, result: { recoveryKeys: 1 } }, [SECRET]);
    expect(copy && (copy as Buffer).includes(SECRET)).toBe(true);
    expect(written && Buffer.from(written as Uint8Array).includes(SECRET)).toBe(true); // still in flight
    (done as unknown as () => void)();
    await p;
    expect((written as unknown as Uint8Array).every((b) => b === 0)).toBe(true);
    expect(SECRET.includes(MARK)).toBe(true); // the caller's own copy is the caller's to wipe
    expect(() => encodeFrame({ id: 1, request: { op: 'open', passphrase: Buffer.from('x') } })).toThrow(
      expect.objectContaining({ code: 'INTERNAL' }),
    );
  });
});

describe('requests with secrets', () => {
  it('parseEnvelope hands the secret of an open to the request, refuses misplaced ones and keyData', () => {
    const pass = Buffer.from(SECRET);
    const env = parseEnvelope(
      { id: 1, request: { op: 'open', image: '/i', name: 'n', readOnly: false, loop: false } },
      [pass],
    );
    expect(env.request).toMatchObject({ op: 'open', passphrase: pass });
    const re = parseEnvelope({ id: 2, request: { op: 'reencrypt', name: 'n', keyFiles: [] } }, [pass, pass]);
    expect(re.request).toMatchObject({ op: 'reencrypt', passphrases: [pass, pass] });
    for (const [request, secrets] of [
      [{ op: 'status' }, [pass]],
      [{ op: 'open', image: '/i', name: 'n' }, [pass, pass]],
      [{ op: 'open', image: '/i', name: 'n', keyFile: '/k' }, [pass]],
      [{ op: 'open', image: '/i', name: 'n', keyData: 'cGFzcw==' }, []],
    ] as const) {
      expect(() => parseEnvelope({ id: 3, request }, [...secrets])).toThrow(
        expect.objectContaining({ code: 'USAGE' }),
      );
    }
  });

  const dir = useTempDir('atrest-framing-', { perTest: true });
  let server: Server | null = null;
  afterEach(async () => {
    await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
    server = null;
  });

  it('the client sends a secret as raw bytes and gets reply secrets back as Buffers', async () => {
    const paths = runtimePaths({ ATREST_STATE_DIR: dir() });
    const seen: Frame[] = [];
    const rawLines: string[] = [];
    server = createServer((sock) => {
      const reader = new FrameReader(
        (f) => {
          seen.push({ message: f.message, secrets: f.secrets.map((s) => Buffer.from(s)) });
          void writeFrame(sock, { id: f.message.id, ok: true, result: { recoveryKeys: 1 } }, [
            Buffer.from('rec\0key\n'),
          ]);
        },
        () => undefined,
      );
      sock.on('data', (c: Buffer) => {
        rawLines.push(c.subarray(0, c.indexOf(0x0a)).toString('latin1'));
        reader.push(c);
      });
    });
    await new Promise<void>((r) => server?.listen(paths.socket, r));
    const pass = Buffer.from(SECRET);
    const { result, secrets } = await requestWithSecrets(
      paths,
      { op: 'open', image: '/i', name: 'n', readOnly: false, loop: false },
      [pass],
    );
    expect(result).toEqual({ recoveryKeys: 1 });
    expect(secrets.map((s) => s.toString('latin1'))).toEqual(['rec\0key\n']);
    expect(seen[0]?.secrets[0]?.equals(SECRET)).toBe(true);
    expect(JSON.stringify(seen[0]?.message)).not.toContain('phrase');
    expect(rawLines[0]).not.toContain('phrase');
    expect(pass.equals(SECRET)).toBe(true); // the caller wipes its own
  });

  it('the daemon wipes request secrets after the request and reply secrets after writing them', async () => {
    const paths = runtimePaths({
      ATREST_STATE_DIR: join(dir(), 'state'),
      ATREST_RUN_DIR: join(dir(), 'run'),
      ATREST_AUDIT_LOG: join(dir(), 'audit.log'),
    });
    const d = new Daemon({ paths, logLevel: 'error' });
    const recovery = [Buffer.from('new\nrecovery\0key'), Buffer.from([0, 10, 255])];
    const service = (d as unknown as { service: Record<string, unknown> }).service;
    let got: Buffer[] = [];
    service.reencrypt = (_n: string, _f: string[], _r: number | undefined, p: Buffer[] = []) => {
      got = p.map((x) => Buffer.from(x));
      return Promise.resolve({ recovery });
    };
    const out: Buffer[] = [];
    const sock = {
      destroyed: false,
      write(data: Uint8Array, cb: () => void): boolean {
        out.push(Buffer.from(data));
        cb();
        return true;
      },
    };
    const handle = (d as unknown as { handleFrame(s: unknown, f: Frame): Promise<void> }).handleFrame.bind(d);
    const pass = Buffer.from(SECRET);
    await handle(sock, {
      message: { id: 5, request: { op: 'reencrypt', name: 'v', keyFiles: [] } },
      secrets: [pass],
    });
    expect(got[0]?.equals(SECRET)).toBe(true);
    expect(pass.every((b) => b === 0)).toBe(true);
    for (const r of recovery) expect(r.every((b) => b === 0)).toBe(true);
    const c = collect();
    c.reader.push(Buffer.concat(out));
    expect(c.errors).toEqual([]);
    expect(c.frames[0]?.message).toEqual({ id: 5, ok: true, result: { recoveryKeys: 2 } });
    expect(c.frames[0]?.secrets.map((s) => s.toString('latin1'))).toEqual(['new\nrecovery\0key', '\0\n\xff']);

    // an open that fails still wipes the passphrase, and the error reply carries no secret
    out.length = 0;
    const pass2 = Buffer.from(SECRET);
    await handle(sock, {
      message: {
        id: 6,
        request: { op: 'open', image: join(dir(), 'missing.img'), name: 'x', readOnly: false, loop: false },
      },
      secrets: [pass2],
    });
    expect(pass2.every((b) => b === 0)).toBe(true);
    const reply = JSON.parse(Buffer.concat(out).toString('utf8')) as { ok: boolean; error: { code: string } };
    expect(reply.ok).toBe(false);
    expect(reply.error.code).toBe('FILE_NOT_FOUND');
    expect(Buffer.concat(out).includes(MARK)).toBe(false);
  });
});

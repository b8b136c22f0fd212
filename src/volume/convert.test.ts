import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { formatLuks2, readLuks2 } from '../luks2/index.js';
import { InProcessXtsCipher, PlainCipher } from './cipher.js';
import {
  Converter,
  findConversion,
  sidecarPath,
  startEncrypt,
  type ConverterOptions,
  type ConvertPlan,
  type ConvFile,
  type ConvIo,
  type HeaderRequest,
} from './convert.js';
import { Volume } from './volume.js';

const BATCH = 64 * 1024;
let dir: string;
let key: Buffer;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'atrest-convert-'));
  key = randomBytes(64);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function plainImage(size: number, name = 'p.img'): Promise<{ path: string; data: Buffer }> {
  const path = join(dir, name);
  const data = randomBytes(size);
  await writeFile(path, data);
  return { path, data };
}

function makeHeader(req: HeaderRequest): Promise<void> {
  return formatLuks2({
    imagePath: req.imagePath,
    headerPath: req.headerPath,
    existingImage: true,
    dataOffset: req.dataOffset,
    dataSize: req.dataSize,
    sectorSize: req.sectorSize,
    mutateJson: req.mutateJson,
    passphrase: Buffer.from('pass'),
    pbkdf2Iterations: 1000,
    volumeKey: key,
  }).then(() => undefined);
}

/** Starts encrypting `path` in batches of BATCH, with a detached header when `hdr` is given. */
function start(path: string, sectorSize: 512 | 4096, hdr?: string): ReturnType<typeof startEncrypt> {
  return startEncrypt(path, { sectorSize, batch: BATCH, makeHeader, ...(hdr ? { header: hdr } : {}) });
}

/** A converter of a plaintext image under this test's key. */
function converter(
  image: string,
  c: { header: string; plan: ConvertPlan },
  extra: Partial<ConverterOptions> = {},
): Converter {
  return new Converter({
    image,
    header: c.header,
    plan: c.plan,
    target: new InProcessXtsCipher(key),
    source: new PlainCipher(),
    ...extra,
  });
}

/** Resumes whatever conversion the image has, to the end (fresh Converter, as after a crash). */
async function resume(image: string, header?: string, io?: ConvIo): Promise<void> {
  const c = await findConversion(image, header);
  if (c === null) return;
  await converter(image, c, io ? { io } : {}).run();
}

/** The decrypted view of a finished volume. */
async function view(image: string, header?: string): Promise<Buffer> {
  const meta = await readLuks2(header ?? image, { imagePath: image });
  expect(meta.converting).toBe(false);
  const size = meta.dataSize === 'dynamic' ? meta.imageSize - meta.dataOffset : meta.dataSize;
  const v = await Volume.open({
    imagePath: image,
    dataOffset: meta.dataOffset,
    dataSize: size,
    sectorSize: meta.sectorSize,
    ivTweak: 0,
    cipher: new InProcessXtsCipher(key),
    readOnly: true,
  });
  try {
    return await v.read(0, size);
  } finally {
    await v.close();
  }
}

class Killed extends Error {}

describe('in-place encryption', () => {
  it('attached header: the image grows by 16 MiB, is standard LUKS2 and decrypts to the original', async () => {
    const { path, data } = await plainImage(5 * BATCH + 4096);
    const { header, plan } = await startEncrypt(path, { sectorSize: 4096, batch: BATCH, makeHeader });
    expect(header).toBe(sidecarPath(path));
    expect(plan.resilience).toBe('datashift');
    const seen: number[] = [];
    const c = converter(path, { header, plan }, { onProgress: (p) => seen.push(p.percent) });
    expect(await c.run()).toBe(true);
    expect(seen.at(-1)).toBe(100);
    expect((await stat(path)).size).toBe(16 * 1024 * 1024 + data.length);
    await expect(stat(header)).rejects.toMatchObject({ code: 'ENOENT' });
    const meta = await readLuks2(path);
    expect(meta.dataOffset).toBe(16 * 1024 * 1024);
    expect(meta.tokens).toEqual([]);
    expect(sha(await view(path))).toBe(sha(data));
    // no plaintext left anywhere in the image
    const raw = await readFile(path);
    expect(raw.includes(data.subarray(0, 64))).toBe(false);
    expect(raw.includes(data.subarray(data.length - 64))).toBe(false);
  });

  it('detached header: ciphertext replaces plaintext at the same offsets (checksum resilience)', async () => {
    const { path, data } = await plainImage(3 * BATCH + 512);
    const hdr = join(dir, 'p.hdr');
    const { plan } = await startEncrypt(path, { header: hdr, sectorSize: 512, batch: BATCH, makeHeader });
    expect(plan.resilience).toBe('checksum');
    await resume(path, hdr);
    expect((await stat(path)).size).toBe(data.length);
    expect(sha(await view(path, hdr))).toBe(sha(data));
  });

  it('refuses LUKS images, sizes that are not whole sectors, and says which sector sizes work', async () => {
    const { path } = await plainImage(4096 + 1024);
    await expect(startEncrypt(path, { sectorSize: 4096, makeHeader })).rejects.toMatchObject({
      code: 'USAGE',
      message: expect.stringMatching(/not a whole number of 4096-byte sectors/) as unknown,
      hint: expect.stringMatching(/--sector-size 1024/) as unknown,
    });
    const luks = join(dir, 'l.img');
    await formatLuks2({
      imagePath: luks,
      dataSize: 1 << 20,
      passphrase: Buffer.from('x'),
      pbkdf2Iterations: 1000,
    });
    await expect(startEncrypt(luks, { sectorSize: 4096, makeHeader })).rejects.toMatchObject({
      code: 'USAGE',
      hint: expect.stringMatching(/reencrypt/) as unknown,
    });
  });

  const points = [
    'after-grow',
    'sums-written',
    'record-written',
    'after-arm',
    'before-data-write',
    'mid-data-write',
    'after-data-write',
    'after-data-sync',
    'after-checkpoint',
    'after-final-record',
    'header-copied',
    'header-synced',
    'unmarked',
    'sidecar-removed',
  ];
  for (const header of ['attached', 'detached'] as const) {
    for (const point of points) {
      for (const nth of [1, 3]) {
        it(`${header}: a crash at ${point} #${nth} resumes to the exact original`, async () => {
          const { path, data } = await plainImage(4 * BATCH + 4096);
          const hdr = header === 'detached' ? join(dir, 'p.hdr') : undefined;
          const s = await start(path, 4096, hdr);
          let count = 0;
          const c = converter(path, s, {
            killPoint: (name) => {
              if (name === point && ++count === nth) throw new Killed(name);
            },
          });
          await c.run().catch((err: unknown) => {
            if (!(err instanceof Killed)) throw err;
          });
          await resume(path, hdr);
          expect(sha(await view(path, hdr))).toBe(sha(data));
        });
      }
    }
  }
});

/**
 * A simulated disk under the converter: writes stay in a volatile cache until sync(); a power loss
 * keeps a random subset of the unsynced writes, each torn at a random 512-byte boundary.
 */
class PowerLossIo implements ConvIo {
  readonly files = new Map<string, { durable: Buffer; pending: Array<{ pos: number; data: Buffer }> }>();
  ops = 0;
  constructor(
    private readonly failAt: number,
    private readonly rand: () => number,
  ) {}

  async load(path: string): Promise<void> {
    this.files.set(path, { durable: await readFile(path), pending: [] });
  }

  private tick(): void {
    if (++this.ops === this.failAt) throw new Killed('power loss');
  }

  open(path: string): Promise<ConvFile> {
    const f = this.files.get(path);
    if (!f) return Promise.reject(new Error(`not loaded: ${path}`));
    const apply = (buf: Buffer, w: { pos: number; data: Buffer }): Buffer => {
      const end = w.pos + w.data.length;
      const out = end > buf.length ? Buffer.concat([buf, Buffer.alloc(end - buf.length)]) : buf;
      w.data.copy(out, w.pos);
      return out;
    };
    const view = (): Buffer => f.pending.reduce<Buffer>((b, w) => apply(b, w), Buffer.from(f.durable));
    return Promise.resolve({
      read: (buf: Buffer, pos: number): Promise<void> => {
        const v = view();
        buf.fill(0);
        v.copy(buf, 0, Math.min(pos, v.length), Math.min(pos + buf.length, v.length));
        return Promise.resolve();
      },
      write: (buf: Buffer, pos: number): Promise<void> => {
        this.tick();
        f.pending.push({ pos, data: Buffer.from(buf) });
        return Promise.resolve();
      },
      sync: (): Promise<void> => {
        this.tick();
        f.durable = view();
        f.pending = [];
        return Promise.resolve();
      },
      size: (): Promise<number> => Promise.resolve(view().length),
      truncate: (size: number): Promise<void> => {
        this.tick();
        const v = view();
        f.durable =
          size <= v.length ? v.subarray(0, size) : Buffer.concat([v, Buffer.alloc(size - v.length)]);
        f.pending = [];
        return Promise.resolve();
      },
      close: (): Promise<void> => Promise.resolve(),
    });
  }

  /** What survives the power loss, written back to the real files. */
  async crash(): Promise<void> {
    for (const [path, f] of this.files) {
      let disk = f.durable;
      for (const w of f.pending) {
        if (this.rand() < 0.5) continue;
        const sectors = w.data.length / 512;
        const keep = Math.floor(this.rand() * (sectors + 1)) * 512;
        const first = this.rand() < 0.5;
        const part = first
          ? { pos: w.pos, data: w.data.subarray(0, keep) }
          : { pos: w.pos + keep, data: w.data.subarray(keep) };
        const end = part.pos + part.data.length;
        if (end > disk.length) disk = Buffer.concat([disk, Buffer.alloc(end - disk.length)]);
        part.data.copy(disk, part.pos);
      }
      await writeFile(path, disk);
    }
  }
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('power loss during the batches (unsynced writes dropped or torn)', () => {
  for (const header of ['attached', 'detached'] as const) {
    it(`${header}: every I/O operation as the failure point, then resume, gives the original`, async () => {
      let failures = 0;
      for (let failAt = 1; failAt <= 40; failAt++) {
        await rm(dir, { recursive: true, force: true });
        dir = await mkdtemp(join(tmpdir(), 'atrest-convert-'));
        const { path, data } = await plainImage(3 * BATCH + 512 * 3);
        const hdr = header === 'detached' ? join(dir, 'p.hdr') : undefined;
        const s = await start(path, 512, hdr);
        const io = new PowerLossIo(failAt, lcg(failAt * 7919));
        await io.load(path);
        await io.load(s.header);
        const c = converter(path, s, { io, finalize: false });
        // the batches run on the simulated disk; finalizing (by resume) uses the real files
        const stopped = await c.run().then(
          () => false,
          (err: unknown) => {
            if (!(err instanceof Killed)) throw err;
            return true;
          },
        );
        if (stopped) failures++;
        await io.crash(); // after a complete run nothing is pending: this just writes the disk back
        await resume(path, hdr);
        expect(sha(await view(path, hdr)), `fail at op ${failAt}`).toBe(sha(data));
      }
      expect(failures).toBeGreaterThan(10);
    });
  }
});

describe('online: reads and writes during the conversion', () => {
  for (const header of ['attached', 'detached'] as const) {
    it(`${header}: concurrent random writes and reads land correctly on either side of the front`, async () => {
      const size = 12 * BATCH;
      const { path, data } = await plainImage(size);
      const expected = Buffer.from(data);
      const hdr = header === 'detached' ? join(dir, 'p.hdr') : undefined;
      const s = await start(path, 512, hdr);
      const c = converter(path, s);
      const front = await c.prepare();
      const volume = await Volume.open({
        imagePath: path,
        dataOffset: s.plan.targetOffset,
        dataSize: size,
        sectorSize: 512,
        ivTweak: 0,
        cipher: new InProcessXtsCipher(key),
        readOnly: false,
        writeBehindBytes: 256 * 1024,
        conversion: { front, sourceOffset: 0, sourceCipher: new PlainCipher() },
      });
      c.attach(volume);
      const running = c.run();
      const rand = lcg(42);
      let mismatches = 0;
      for (let i = 0; i < 300; i++) {
        const pos = Math.floor(rand() * (size - 9000));
        const len = 1 + Math.floor(rand() * 9000);
        if (rand() < 0.5) {
          const d = randomBytes(len);
          await volume.write(pos, d);
          d.copy(expected, pos);
        } else {
          await volume.fsync(true);
          const got = await volume.read(pos, len);
          if (!got.equals(expected.subarray(pos, pos + len))) mismatches++;
        }
        if (i % 20 === 0) await new Promise((r) => setImmediate(r));
      }
      expect(mismatches).toBe(0);
      expect(await running).toBe(true);
      expect(volume.conversionFront).toBeNull();
      const all = await volume.read(0, size);
      expect(sha(all)).toBe(sha(expected));
      await volume.fsync(false);
      await volume.close();
      expect(sha(await view(path, hdr))).toBe(sha(expected));
    });
  }
});

import { randomBytes, randomInt } from 'node:crypto';
import { open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalKeyring } from '../crypto/keyring.js';
import { xtsInPlace } from '../crypto/xts.js';
import { Volume } from './volume.js';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { rejects } from '../errors/rejects.test-helper.js';

/** Volumes take their key by keyring ref: this file's keys live in a keyring of its own. */
const keyring = new LocalKeyring();

const dir = useTempDir('atrest-volume-');

function xtsKey(): Buffer {
  for (;;) {
    const k = randomBytes(64);
    if (!k.subarray(0, 32).equals(k.subarray(32))) return k;
  }
}

async function makeVolume(
  opts: {
    sectorSize?: number;
    dataSize?: number;
    dataOffset?: number;
    ivTweak?: number;
    readOnly?: boolean;
    /** No encryption (the identity), like the bench-plain volume. */
    plain?: boolean;
  } = {},
): Promise<{ volume: Volume; image: string; key: Buffer; dataOffset: number; ivTweak: number }> {
  const key = xtsKey();
  const dataOffset = opts.dataOffset ?? 16384;
  const dataSize = opts.dataSize ?? 256 * 1024;
  const image = join(dir(), `img-${randomBytes(4).toString('hex')}`);
  await writeFile(image, Buffer.alloc(dataOffset + dataSize + 4096));
  const ivTweak = opts.ivTweak ?? 0;
  const volume = await Volume.open({
    imagePath: image,
    dataOffset,
    dataSize,
    sectorSize: opts.sectorSize ?? 512,
    ivTweak,
    key: opts.plain === true ? null : keyring.add(key),
    readOnly: opts.readOnly ?? false,
  });
  return { volume, image, key, dataOffset, ivTweak };
}

describe('Volume', () => {
  for (const sectorSize of [512, 1024, 2048, 4096]) {
    it(`matches a plaintext model under random reads and writes (sector ${sectorSize})`, async () => {
      const size = 128 * 1024;
      const { volume } = await makeVolume({ sectorSize, dataSize: size, ivTweak: 7 });
      const model = Buffer.alloc(size); // a fresh zero image decrypts to garbage: initialise it first
      await volume.write(0, model);
      for (let i = 0; i < 150; i++) {
        const pos = randomInt(0, size);
        const len = randomInt(1, Math.min(3 * sectorSize + 1, size - pos + 1));
        if (i % 2 === 0) {
          const data = randomBytes(len);
          expect(await volume.write(pos, data)).toBe(len);
          data.copy(model, pos);
        } else {
          expect((await volume.read(pos, len)).equals(model.subarray(pos, pos + len))).toBe(true);
        }
      }
      expect((await volume.read(0, size)).equals(model)).toBe(true);
      await volume.close();
    });
  }

  it('writes real XTS ciphertext at dataOffset with tweak offset/512 + ivTweak', async () => {
    const { volume, image, key, dataOffset, ivTweak } = await makeVolume({ sectorSize: 4096, ivTweak: 1000 });
    const plain = randomBytes(3 * 4096);
    await volume.write(8192, plain);
    await volume.fsync(true);
    const img = await readFile(image);
    const ct = Buffer.from(img.subarray(dataOffset + 8192, dataOffset + 8192 + plain.length));
    expect(ct.equals(plain)).toBe(false);
    xtsInPlace('decrypt', key, ct, 4096, 8192 / 512 + ivTweak);
    expect(ct.equals(plain)).toBe(true);
    // the header area before dataOffset is untouched
    expect(img.subarray(0, dataOffset).every((b) => b === 0)).toBe(true);
    await volume.close();
  });

  it('handles large requests cut into batches', async () => {
    const size = 3 * 1024 * 1024;
    const { volume } = await makeVolume({ dataSize: size, sectorSize: 4096 });
    const data = randomBytes(size - 1000);
    expect(await volume.write(333, data)).toBe(data.length);
    expect((await volume.read(333, data.length)).equals(data)).toBe(true);
    const c = volume.counters;
    expect(c.bytesWritten).toBe(data.length);
    expect(c.writeOps).toBe(1);
    expect(c.readOps).toBe(1);
    await volume.close();
  });

  it('never loses bytes of concurrent overlapping partial-sector writes', async () => {
    const { volume } = await makeVolume({ sectorSize: 4096, dataSize: 64 * 1024 });
    await volume.write(0, Buffer.alloc(64 * 1024));
    const model = Buffer.alloc(64 * 1024);
    const writes: Promise<number>[] = [];
    // many small writes, disjoint bytes, sharing sectors: every byte must survive
    for (let i = 0; i < 400; i++) {
      const pos = i * 97;
      const data = Buffer.alloc(50, (i % 250) + 1);
      data.copy(model, pos);
      writes.push(volume.write(pos, data));
    }
    await Promise.all(writes);
    expect((await volume.read(0, model.length)).equals(model)).toBe(true);
    await volume.close();
  });

  it('clamps reads at the end and refuses writes past it', async () => {
    const { volume } = await makeVolume({ dataSize: 8192, sectorSize: 512 });
    expect((await volume.read(8000, 1000)).length).toBe(192);
    expect((await volume.read(8192, 10)).length).toBe(0);
    expect((await volume.read(100000, 10)).length).toBe(0);
    expect(await volume.write(8100, Buffer.alloc(200, 1))).toBe(92);
    await rejects(volume.write(8192, Buffer.alloc(1)), 'NO_SPACE');
    expect(await volume.write(9000, Buffer.alloc(0))).toBe(0);
    await rejects(volume.read(-1, 1), 'USAGE');
    await volume.close();
  });

  it('refuses writes when read-only, still reads', async () => {
    const { volume, image } = await makeVolume({ plain: true, dataOffset: 0, dataSize: 4096 });
    await volume.write(0, Buffer.from('hello'));
    await volume.close();
    const ro = await Volume.open({
      imagePath: image,
      dataOffset: 0,
      dataSize: 4096,
      sectorSize: 512,
      ivTweak: 0,
      key: null,
      readOnly: true,
    });
    await rejects(ro.write(0, Buffer.from('x')), 'READ_ONLY');
    expect((await ro.read(0, 5)).toString()).toBe('hello');
    await ro.fsync(false);
    await ro.close();
  });

  it('stops all I/O after lock(): nothing more reaches the image', async () => {
    const { volume, image } = await makeVolume({ dataOffset: 0, dataSize: 4096 });
    // a converter-style exclusive hold keeps the write waiting for its range lock
    const release = await volume.lockRange(0, 4096);
    const pending = volume.write(0, Buffer.alloc(4096, 0x5a));
    await new Promise((r) => setTimeout(r, 20));
    expect(volume.busy).toBe(true);
    volume.lock('key revoked');
    const settled = volume.settle();
    release();
    await rejects(pending, 'LOCKED');
    await settled;
    expect(volume.busy).toBe(false);
    await rejects(volume.read(0, 1), 'LOCKED');
    await rejects(volume.write(0, Buffer.alloc(1)), 'LOCKED');
    await rejects(volume.fsync(true), 'LOCKED');
    expect((await readFile(image)).subarray(0, 4096).every((b) => b === 0)).toBe(true);
    await volume.close();
    await volume.close();
  });

  it('rejects bad geometry and short images', async () => {
    const image = join(dir(), 'short');
    await writeFile(image, Buffer.alloc(4096));
    const base = { imagePath: image, dataOffset: 0, ivTweak: 0, key: null, readOnly: false };
    await rejects(Volume.open({ ...base, dataSize: 8192, sectorSize: 512 }), 'TRUNCATED_IMAGE');
    await rejects(Volume.open({ ...base, dataSize: 4096, sectorSize: 600 }), 'UNSUPPORTED');
    await rejects(Volume.open({ ...base, dataSize: 1000, sectorSize: 512 }), 'UNSUPPORTED');
    await rejects(
      Volume.open({ ...base, imagePath: join(dir(), 'nope'), dataSize: 512, sectorSize: 512 }),
      'FILE_NOT_FOUND',
    );
    const fh = await open(image, 'r');
    await fh.close();
  });

  it('fails closed-volume calls with NOT_OPEN', async () => {
    const { volume } = await makeVolume();
    await volume.close();
    await rejects(volume.read(0, 1), 'NOT_OPEN');
  });
});

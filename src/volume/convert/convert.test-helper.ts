// Unit-test helper (not built into dist/): the converter tests' fixture: a temp dir and key per test, plaintext images, headers, converters, resuming and the decrypted view.
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect } from 'vitest';
import { LocalKeyring } from '../../crypto/keyring.js';
import { formatLuks2, readLuks2, type ConvertPlan } from '../../luks2/index.js';
import { InProcessXtsCipher, PlainCipher } from '../cipher.js';
import { useTempDir } from '../../test-helpers/temp-dir.test-helper.js';
import { Volume } from '../volume.js';
import { Converter, type ConverterOptions } from './converter.js';
import { findConversion } from './find.js';
import type { ConvIo } from './io.js';
import { startEncrypt, type HeaderRequest } from './plan.js';

export const BATCH = 64 * 1024;
/** tmpfs when there is one: the simulations model the disk themselves and need no real fsync. */
export const FAST_TMP = existsSync('/dev/shm') ? '/dev/shm' : tmpdir();

export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A small seeded random number generator in [0, 1): every simulation run is reproducible. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Thrown at a kill point or a simulated power loss. */
export class Killed extends Error {}

export interface ConvertFixture {
  /** This test's directory (freshDir() replaces it). */
  dir: string;
  /** Replaces `dir` by a fresh, empty directory (on tmpfs when `fast`), removing the one freshDir() made before. */
  freshDir: (fast?: boolean) => Promise<void>;
  /** This test's volume key (64 bytes). */
  key: Buffer;
  /** This test's key in a keyring of its own (a Volume takes keys by keyring ref); emptied after each test. */
  keyRef: () => ReturnType<LocalKeyring['add']>;
  plainImage: (size: number, name?: string) => Promise<{ path: string; data: Buffer }>;
  makeHeader: (req: HeaderRequest) => Promise<void>;
  /** Starts encrypting `path` in batches of BATCH, with a detached header when `hdr` is given. */
  start: (path: string, sectorSize: 512 | 4096, hdr?: string) => ReturnType<typeof startEncrypt>;
  /** A converter of a plaintext image under this test's key. */
  converter: (
    image: string,
    c: { header: string; plan: ConvertPlan },
    extra?: Partial<ConverterOptions>,
  ) => Converter;
  /** Resumes whatever conversion the image has, to the end (fresh Converter, as after a crash). */
  resume: (image: string, header?: string, io?: ConvIo) => Promise<void>;
  /** The decrypted view of a finished volume. */
  view: (image: string, header?: string) => Promise<Buffer>;
}

/** Registers the per-test hooks (fresh directory and key, keyring emptied) and returns the fixture. */
export function useConvertFixture(): ConvertFixture {
  const keyring = new LocalKeyring();
  const base = useTempDir('atrest-convert-', { perTest: true });
  const fast = useTempDir('atrest-convert-fast-', { perTest: true, parent: FAST_TMP });
  let runs = 0;
  let made: string | null = null;
  const refs: Array<ReturnType<LocalKeyring['add']>> = [];
  const fx: ConvertFixture = {
    async freshDir(onTmpfs = false) {
      if (made !== null) await rm(made, { recursive: true, force: true });
      made = join(onTmpfs ? fast() : base(), `run-${++runs}`);
      await mkdir(made);
      fx.dir = made;
    },
    dir: '',
    key: Buffer.alloc(0),
    keyRef: () => {
      const ref = keyring.add(fx.key);
      refs.push(ref);
      return ref;
    },
    plainImage: async (size, name = 'p.img') => {
      const path = join(fx.dir, name);
      const data = randomBytes(size);
      await writeFile(path, data);
      return { path, data };
    },
    makeHeader: (req) => {
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
        volumeKey: fx.key,
      }).then(() => undefined);
    },
    start: (path, sectorSize, hdr) => {
      return startEncrypt(path, {
        sectorSize,
        batch: BATCH,
        makeHeader: fx.makeHeader,
        ...(hdr ? { header: hdr } : {}),
      });
    },
    converter: (image, c, extra = {}) => {
      return new Converter({
        image,
        header: c.header,
        plan: c.plan,
        target: new InProcessXtsCipher(fx.key),
        source: new PlainCipher(),
        ...extra,
      });
    },
    resume: async (image, header, io) => {
      const c = await findConversion(image, header);
      if (c === null) return;
      await fx.converter(image, c, io ? { io } : {}).run();
    },
    view: async (image, header) => {
      const meta = await readLuks2(header ?? image, { imagePath: image });
      expect(meta.converting).toBe(false);
      const size = meta.dataSize === 'dynamic' ? meta.imageSize - meta.dataOffset : meta.dataSize;
      const v = await Volume.open({
        imagePath: image,
        dataOffset: meta.dataOffset,
        dataSize: size,
        sectorSize: meta.sectorSize,
        ivTweak: 0,
        key: fx.keyRef(),
        readOnly: true,
      });
      try {
        return await v.read(0, size);
      } finally {
        await v.close();
      }
    },
  };
  beforeEach(() => {
    fx.dir = base();
    fx.key = randomBytes(64);
    made = null;
  });
  afterEach(() => {
    for (const r of refs.splice(0)) keyring.wipe(r);
  });
  return fx;
}

import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AREA_BYTES, AREA_OFFSET, markConverting, type ConvertPlan } from '../../luks2/index.js';
import { InProcessXtsCipher, PlainCipher } from '../cipher.js';
import { RangeLock } from '../range-lock.js';
import { BATCH, Killed, lcg, sha, useConvertFixture } from './convert.test-helper.js';
import type { ConversionHost } from './converter.js';
import { findConversion } from './find.js';
import type { ConvFile, ConvIo } from './io.js';
import { wrapOldKey } from './old-key.js';
import { sidecarPath } from './sidecar.js';

const fx = useConvertFixture();
const { plainImage, makeHeader, start, converter, resume, view } = fx;

/**
 * A simulated disk under the converter: writes stay in a volatile cache until sync(); a power loss
 * keeps a random subset of the unsynced writes, each torn at a random 512-byte boundary.
 */
class PowerLossIo implements ConvIo {
  readonly files = new Map<string, { durable: Buffer; pending: Array<{ pos: number; data: Buffer }> }>();
  ops = 0;
  /** Power is gone: every later write or sync (the converter's or a user's) fails and changes nothing. */
  dead = false;
  /** Called when a sync of `path` has made everything written to it so far durable. */
  onSync: (path: string) => void = () => undefined;
  constructor(
    private readonly failAt: number,
    private readonly rand: () => number,
  ) {}

  async load(path: string): Promise<void> {
    this.files.set(path, { durable: await readFile(path), pending: [] });
  }

  private async tick(): Promise<void> {
    // every operation is a point where the other users of the file may run (they interleave per op)
    await new Promise((r) => setImmediate(r));
    if (this.dead) throw new Killed('power lost earlier');
    if (++this.ops === this.failAt) {
      this.dead = true;
      throw new Killed('power loss');
    }
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
        // the durable bytes, then the page cache's newer ones over them (without copying the file)
        buf.fill(0);
        const end = pos + buf.length;
        f.durable.copy(buf, 0, Math.min(pos, f.durable.length), Math.min(end, f.durable.length));
        for (const w of f.pending) {
          const a = Math.max(pos, w.pos);
          const b = Math.min(end, w.pos + w.data.length);
          if (a < b) w.data.copy(buf, a - pos, a - w.pos, b - w.pos);
        }
        return Promise.resolve();
      },
      write: async (buf: Buffer, pos: number): Promise<void> => {
        await this.tick();
        f.pending.push({ pos, data: Buffer.from(buf) });
      },
      writeDurable: async (buf: Buffer, pos: number): Promise<void> => {
        // O_DSYNC / O_DIRECT: the kernel writes back what is cached in this range first, then these
        // bytes reach the disk; cached writes elsewhere stay volatile (only their overlapping part is
        // flushed, the rest stays pending)
        await this.tick();
        const end = pos + buf.length;
        const left: Array<{ pos: number; data: Buffer }> = [];
        for (const w of f.pending) {
          const a = Math.max(pos, w.pos);
          const b = Math.min(end, w.pos + w.data.length);
          if (a >= b) {
            left.push(w);
            continue;
          }
          f.durable = apply(f.durable, { pos: a, data: w.data.subarray(a - w.pos, b - w.pos) });
          if (w.pos < a) left.push({ pos: w.pos, data: w.data.subarray(0, a - w.pos) });
          if (b < w.pos + w.data.length) left.push({ pos: b, data: w.data.subarray(b - w.pos) });
        }
        f.pending = left;
        f.durable = apply(f.durable, { pos, data: Buffer.from(buf) });
      },
      sync: async (): Promise<void> => {
        await this.tick();
        f.durable = view();
        f.pending = [];
        this.onSync(path);
      },
      size: (): Promise<number> =>
        Promise.resolve(f.pending.reduce((n, w) => Math.max(n, w.pos + w.data.length), f.durable.length)),
      truncate: async (size: number): Promise<void> => {
        await this.tick();
        const v = view();
        f.durable =
          size <= v.length ? v.subarray(0, size) : Buffer.concat([v, Buffer.alloc(size - v.length)]);
        f.pending = [];
        this.onSync(path);
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

describe('power loss during the batches (unsynced writes dropped or torn)', () => {
  for (const header of ['attached', 'detached'] as const) {
    it(`${header}: every I/O operation as the failure point, then resume, gives the original`, async () => {
      let failures = 0;
      for (let failAt = 1; failAt <= 40; failAt++) {
        await fx.freshDir();
        const { path, data } = await plainImage(3 * BATCH + 512 * 3);
        const hdr = header === 'detached' ? join(fx.dir, 'p.hdr') : undefined;
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
    }, 120_000);
  }
});

/**
 * A user of the online volume in the power-loss simulation: writes 1 to 3 sectors at a time through
 * the page cache (the simulated image file), never syncing, under the volume's range locks and in the
 * layout the conversion front says (source below it, target above), as Volume does. It tracks, per
 * sector, the values a power loss may leave there: the newest value a completed sync made durable, and
 * every value written since.
 */
class SimUser implements ConversionHost {
  readonly locks = new RangeLock();
  /** Idle to the converter's yielding: these simulations want batches back to back. */
  foreground(): { inFlight: number; completed: number; busyNs: number } {
    return { inFlight: 0, completed: 0, busyNs: 0 };
  }
  front: number;
  stopped = false;
  writes = 0;
  /** Per sector: [durable value, values written since] (plaintext). */
  readonly allowed: Buffer[][];

  constructor(
    readonly plan: ConvertPlan,
    original: Buffer,
    private readonly source: InProcessXtsCipher | PlainCipher,
    private readonly target: InProcessXtsCipher,
  ) {
    this.front = plan.size;
    const ss = plan.sectorSize;
    this.allowed = Array.from({ length: plan.size / ss }, (_, i) => [
      Buffer.from(original.subarray(i * ss, (i + 1) * ss)),
    ]);
  }

  lockRange(first: number, last: number): Promise<() => void> {
    return this.locks.acquire(first, last, true);
  }

  setConversionFront(front: number): void {
    this.front = front;
  }

  /** A sync of the image made every write so far durable. */
  synced(): void {
    for (const a of this.allowed) a.splice(0, a.length - 1);
  }

  /** The source-layout bytes of plaintext `plain` at data position `pos` (plaintext itself for encrypt). */
  async sourceForm(plain: Buffer, pos: number): Promise<Buffer> {
    return this.source.encrypt(Buffer.from(plain), this.plan.sectorSize, pos / 512 + this.plan.sourceIvTweak);
  }

  async run(file: ConvFile, rand: () => number): Promise<void> {
    const { plan } = this;
    const ss = plan.sectorSize;
    const sectors = plan.size / ss;
    while (!this.stopped) {
      // half of the writes land just below the front: in the batch being converted or the next one
      const near = rand() < 0.5;
      const base = Math.floor(this.front / ss) - 1 - Math.floor(rand() * ((2 * plan.batch) / ss));
      const first = near && base >= 0 ? base : Math.floor(rand() * sectors);
      const count = Math.min(1 + Math.floor(rand() * 3), sectors - first);
      const pos = first * ss;
      const end = pos + count * ss;
      const release = await this.lockRange(pos, end);
      try {
        const plain = randomBytes(end - pos);
        const cut = Math.min(end, Math.max(pos, this.front));
        if (cut > pos) {
          const enc = await this.sourceForm(plain.subarray(0, cut - pos), pos);
          await file.write(enc, plan.sourceOffset + pos);
        }
        if (cut < end) {
          const enc = await this.target.encrypt(Buffer.from(plain.subarray(cut - pos)), ss, cut / 512);
          await file.write(enc, plan.targetOffset + cut);
        }
        for (let i = 0; i < count; i++) this.allowed[first + i]?.push(plain.subarray(i * ss, (i + 1) * ss));
        this.writes++;
      } catch (err) {
        if (err instanceof Killed) return;
        throw err;
      } finally {
        release();
      }
    }
  }
}

describe('power loss with users writing through the page cache (online volume)', () => {
  const cases = ['encrypt attached', 'encrypt detached', 'reencrypt'] as const;
  for (const kind of cases) {
    it(`${kind}: every sector ends as exactly its old or a newer value, and no converted sector holds the source`, async () => {
      let failures = 0;
      let userWrites = 0;
      let total = Infinity;
      for (let failAt = 1; failAt <= Math.min(total, 400); failAt += failAt < 40 ? 1 : 5) {
        await fx.freshDir(true);
        // enough batches that a full run has more than 30 I/O operations to fail at (durable writes
        // need no separate sync operation)
        const size = 6 * BATCH + 512 * 3;
        const { path, data } = await plainImage(size);
        const oldKey = randomBytes(64);
        const source = kind === 'reencrypt' ? new InProcessXtsCipher(oldKey) : new PlainCipher();
        let s: { header: string; plan: ConvertPlan };
        if (kind === 'reencrypt') {
          // the image is a detached-header volume under oldKey; its new header (key) names the plan
          await writeFile(path, await source.encrypt(Buffer.from(data), 512, 0));
          const plan: ConvertPlan = {
            mode: 'reencrypt',
            resilience: 'checksum',
            size,
            sectorSize: 512,
            sourceOffset: 0,
            targetOffset: 0,
            sourceIvTweak: 0,
            batch: BATCH,
            area: { offset: AREA_OFFSET, size: AREA_BYTES },
            sidecar: false,
            oldKey: wrapOldKey(fx.key, oldKey),
          };
          const header = join(fx.dir, 'p.hdr');
          await makeHeader({
            imagePath: path,
            headerPath: header,
            existingImage: true,
            dataOffset: 0,
            dataSize: size,
            sectorSize: 512,
            mutateJson: (json) => markConverting(json, plan),
          });
          s = { header, plan };
        } else {
          s = await start(path, 512, kind === 'encrypt detached' ? join(fx.dir, 'p.hdr') : undefined);
        }
        const hdr = s.header === sidecarPath(path) ? undefined : s.header;
        const target = new InProcessXtsCipher(fx.key);
        const user = new SimUser(s.plan, data, source, target);
        const io = new PowerLossIo(failAt, lcg(failAt * 7919));
        io.onSync = (p) => {
          if (p === path) user.synced();
        };
        await io.load(path);
        await io.load(s.header);
        const c = converter(path, s, { io, finalize: false, source, volume: user });
        let using: Promise<unknown> = Promise.resolve();
        const stopped = await (async (): Promise<void> => {
          user.front = await c.prepare();
          const f = await io.open(path);
          using = Promise.all([user.run(f, lcg(failAt * 104729)), user.run(f, lcg(failAt * 7))]);
          await c.run();
        })().then(
          () => false,
          (err: unknown) => {
            if (!(err instanceof Killed)) throw err;
            return true;
          },
        );
        user.stopped = true;
        await using;
        userWrites += user.writes;
        if (stopped) failures++;
        else total = Math.min(total, io.ops);
        await io.crash();

        // recovery (as the next open does), then: nothing counted as converted is still in the source form
        const problems: string[] = [];
        const found = await findConversion(path, hdr);
        if (found !== null) {
          const r = converter(path, found, { source });
          const recovered = await r.prepare();
          const raw = await readFile(path);
          for (let at = recovered; at < size; at += 512) {
            const onDisk = raw.subarray(s.plan.targetOffset + at, s.plan.targetOffset + at + 512);
            for (const v of user.allowed[at / 512] ?? []) {
              if (onDisk.equals(await user.sourceForm(v, at)))
                problems.push(`sector at ${at} counted as converted still holds its source form`);
            }
          }
          await r.run();
        }
        const got = await view(path, hdr);
        for (let i = 0; i < size / 512; i++) {
          const sector = got.subarray(i * 512, (i + 1) * 512);
          if (!(user.allowed[i] ?? []).some((v) => v.equals(sector)))
            problems.push(`sector ${i} is neither its old nor a newer value`);
        }
        // the finished image holds no sector's source form (for encrypt: no plaintext) anywhere
        const raw = await readFile(path);
        const forms = new Set<string>();
        for (let i = 0; i < size / 512; i++)
          for (const v of user.allowed[i] ?? []) forms.add(sha(await user.sourceForm(v, i * 512)));
        for (let at = 0; at + 512 <= raw.length; at += 512) {
          if (forms.has(sha(raw.subarray(at, at + 512)))) problems.push(`source data left at byte ${at}`);
        }
        expect(problems, `power loss at operation ${failAt}`).toEqual([]);
      }
      expect(failures).toBeGreaterThan(30);
      expect(userWrites).toBeGreaterThan(100);
    }, 300_000);
  }
});

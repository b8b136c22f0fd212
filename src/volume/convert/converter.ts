// The in-place converter (plaintext -> LUKS2 "encrypt", old key -> new key "reencrypt"): runs the batches backward, crash-safe, online beside a serving volume.
//
// Layout. The plaintext view has `size` bytes. Unconverted data lives in the *source* layout (offset S
// of the image; plaintext, or the old key), converted data in the *target* layout (offset T, new key);
// each is a DataLayout (../data-layout.ts), the same offset and tweak mapping the serving threads use.
// The conversion walks backward: `front` starts at `size`; [front, size) is converted, [0, front) is not.
//
// Resilience (the record of progress lives in an area of the LUKS2 header file, two alternating 4 KiB
// slots with a sequence number and a SHA-256 over each, so a torn record write falls back to the other;
// its bytes and the ordering rules are described once, in src/luks2/convert-record.ts):
// - datashift (encrypt with an attached header, T = S + 16 MiB > S): a batch of at most T - S bytes is
//   read from the source and written to the target, which never overlaps the source of the batch or of
//   anything below it. Ordering is the whole protocol: data written, data fdatasync'd, then the record
//   {front: batch start} written and fsync'd, and only then the batch is released to foreground I/O.
//   A crash at any instant finds the batch's source intact: it is redone from there.
// - checksum (same offsets: detached header, reencrypt): with the batch's range locked (no user write
//   can land in it until the batch is durable) the image is fdatasync'd, so users' earlier writes there
//   are on the disk and not only in the page cache; then the SHA-256 of every source sector as read
//   now (= as on the disk) goes to the area and the record says {front, hot zone, digest of the sums};
//   both are fsync'd before the first data write; the data is fdatasync'd before the range is released
//   and before the next record. Recovery rereads the hot zone: a sector whose hash
//   matches its source sum is still unconverted and is converted; any other sector already holds the
//   target (converted, or written since by the user). Sums are per encryption sector, the unit a disk
//   writes atomically. A record whose sums do not match their digest was never followed by data writes.
//
// While it runs, the LUKS2 header carries CONVERT_REQUIREMENT (cryptsetup refuses the image) and an
// `atrest-convert` token with the plan. With an attached header, the header lives in a sidecar file
// (IMAGE.atrest-convert.hdr) until the end, when it is copied to the first 16 MiB of the image (free
// by then) and the mark, token and sidecar go.
import { AtrestError, isAtrestError } from '../../errors/index.js';
import {
  decodeRecordSlots,
  encodeRecord,
  recordOffset,
  RECORD_BYTES,
  sectorSums,
  SUM_BYTES,
  sumsDigest,
  sumsOffset,
  type ConvertPlan,
  type ConvertRecord,
} from '../../luks2/index.js';
import type { SectorCipher } from '../cipher.js';
import { DataLayout } from '../data-layout.js';
import type { Volume } from '../volume.js';
import { YieldController, type YieldPolicy } from '../yield-controller.js';
import { finalizeConversion } from './finalize.js';
import { nodeIo, type ConvFile, type ConvIo } from './io.js';
import { progressOf, RateWindow, type ConvertProgress } from './progress.js';

/** What the converter needs of the online volume: its range locks, its front, its foreground counters. */
export type ConversionHost = Pick<Volume, 'foreground' | 'lockRange' | 'setConversionFront'>;

/**
 * Datashift batches bypass the page cache only when the shift leaves this much room between the end of
 * the batch's source and its target: more than any readahead window, so no read pulls the target range
 * into the page cache while the batch writes it directly.
 */
const READAHEAD_MARGIN = 8 * 1024 * 1024;

export interface ConverterOptions {
  image: string;
  /** The header file: the sidecar, a detached header, or the image itself. */
  header: string;
  plan: ConvertPlan;
  /** New key (target) and what the source is (PlainCipher for plaintext, or the old key). */
  target: SectorCipher;
  source: SectorCipher;
  io?: ConvIo;
  /** Online: take batches from the volume's range locks and move its front. */
  volume?: ConversionHost;
  /**
   * Bytes per second (0 or absent: unlimited): a cap on top of the adaptive yielding to foreground
   * I/O (yield-controller.ts) an online conversion always does.
   */
  maxRate?: number;
  /** Online: overrides of the yielding policy (tests, benchmarks); see yield-controller.ts. */
  yieldPolicy?: Partial<Omit<YieldPolicy, 'maxBatch' | 'align'>>;
  /** Time (ms, monotonic) and sleeping, for tests; default performance.now and setTimeout. */
  clock?: { now(): number; sleep(ms: number): Promise<void> };
  /** Test hook: called at named points; tests SIGKILL the process there. */
  killPoint?: (name: string) => void;
  onProgress?: (p: ConvertProgress) => void;
  /** Finalize the header after the last batch (default true; tests of the batch loop turn it off). */
  finalize?: boolean;
}

/** Reads the newest valid record from the area; fresh conversions have none (front = size). */
async function readRecord(header: ConvFile, plan: ConvertPlan): Promise<ConvertRecord> {
  const buf = Buffer.alloc(2 * RECORD_BYTES);
  await header.read(buf, plan.area.offset);
  return decodeRecordSlots(buf)[0] ?? { seq: 0, front: plan.size, hot: null };
}

export class Converter {
  readonly plan: ConvertPlan;
  /** Where unconverted data lies (plaintext, or the old key's segment) and where it goes. */
  readonly #source: DataLayout;
  readonly #target: DataLayout;
  #front: number;
  #seq = 0;
  #paused = false;
  #resume: (() => void) | null = null;
  #state: ConvertProgress['state'] = 'running';
  #error: string | undefined;
  readonly #rate = new RateWindow();
  #stopped = false;
  #files: { image: ConvFile; header: ConvFile } | null = null;
  #volume: ConversionHost | undefined;
  /** Ends the current pause between batches early (pause, stop). */
  #wake: (() => void) | null = null;

  constructor(private readonly o: ConverterOptions) {
    this.plan = o.plan;
    this.#source = new DataLayout(o.plan.sourceOffset, o.plan.sectorSize, o.plan.sourceIvTweak);
    this.#target = new DataLayout(o.plan.targetOffset, o.plan.sectorSize, 0);
    this.#front = o.plan.size;
    this.#volume = o.volume;
  }

  /**
   * Opens the files, reads the newest record, grows the image for the target layout and finishes an
   * interrupted hot zone. Returns the front: serve [0, front) from the source layout, the rest from the
   * target. run() calls it when it was not called before.
   */
  async prepare(): Promise<number> {
    const io = this.o.io ?? nodeIo;
    const { plan } = this;
    const image = await io.open(this.o.image);
    const header = this.o.header === this.o.image ? image : await io.open(this.o.header);
    this.#files = { image, header };
    try {
      const rec = await readRecord(header, plan);
      this.#seq = rec.seq;
      this.#front = rec.front;
      if ((await image.size()) < plan.targetOffset + plan.size) {
        await image.truncate(plan.targetOffset + plan.size);
        await image.sync();
        this.#kill('after-grow');
      }
      if (rec.hot !== null) await this.#recoverHot(image, header, rec.hot);
      return this.#front;
    } catch (err) {
      await this.#closeFiles();
      throw err;
    }
  }

  /** Serves I/O through this volume from now on (its range locks and front). */
  attach(volume: ConversionHost): void {
    this.#volume = volume;
  }

  async #closeFiles(): Promise<void> {
    const f = this.#files;
    this.#files = null;
    if (f === null) return;
    if (f.header !== f.image) await f.header.close().catch(() => undefined);
    await f.image.close().catch(() => undefined);
  }

  get front(): number {
    return this.#front;
  }

  pause(): void {
    this.#paused = true;
    this.#wake?.();
  }

  resume(): void {
    this.#paused = false;
    const r = this.#resume;
    this.#resume = null;
    r?.();
  }

  /** Stops at the next batch boundary (the daemon closing the volume); run() then resolves. */
  stop(): void {
    this.#stopped = true;
    this.#wake?.();
    this.resume();
  }

  /** Sleeps `ms` (the clock's sleep), or less when pause() or stop() is called meanwhile. */
  async #sleep(ms: number): Promise<void> {
    if (!(ms > 0) || this.#stopped || this.#paused) return;
    const woken = new Promise<void>((r) => (this.#wake = r));
    const sleep = this.o.clock ? this.o.clock.sleep(ms) : new Promise((r) => setTimeout(r, ms));
    await Promise.race([woken, sleep]);
    this.#wake = null;
  }

  progress(): ConvertProgress {
    return progressOf({
      mode: this.plan.mode,
      total: this.plan.size,
      done: this.plan.size - this.#front,
      rate: this.#rate.rate(),
      paused: this.#paused,
      state: this.#state,
      error: this.#error,
    });
  }

  #kill(name: string): void {
    this.o.killPoint?.(name);
  }

  #note(): void {
    this.#rate.add(Date.now(), this.plan.size - this.#front);
    this.o.onProgress?.(this.progress());
  }

  /**
   * Runs (or resumes) the conversion to the end, then finalizes the header. Resolves early (without
   * finalizing) after stop(). Safe to call again after a crash: everything is derived from the disk.
   */
  async run(): Promise<boolean> {
    const { plan } = this;
    try {
      if (this.#files === null) await this.prepare();
      const files = this.#files;
      if (files === null) throw new AtrestError('INTERNAL', 'conversion files not open');
      const { image, header } = files;
      this.#volume?.setConversionFront(this.#front);
      this.#note();
      const now = (): number => (this.o.clock ? this.o.clock.now() : performance.now());
      // Online, foreground I/O comes first: the controller sizes each batch and the pause after it from
      // the volume's foreground counters (latency and throughput while converting vs while pausing).
      const host = this.#volume;
      const yielder =
        host === undefined
          ? null
          : new YieldController({ ...this.o.yieldPolicy, maxBatch: plan.batch, align: plan.sectorSize });
      let lastT = now();
      let sinceT = 0;
      while (this.#front > 0) {
        if (this.#paused) {
          this.#state = 'paused';
          await new Promise<void>((r) => (this.#resume = r));
          this.#state = 'running';
          lastT = now();
          sinceT = 0;
        }
        if (this.#stopped) return false;
        const bytes = yielder && host ? yielder.beginBatch(host.foreground(), now()) : plan.batch;
        const start = Math.max(0, this.#front - bytes);
        sinceT += this.#front - start;
        await this.#batch(image, header, start, this.#front);
        let pause = yielder && host ? yielder.endBatch(host.foreground(), now()) : 0;
        this.#note();
        if (yielder && host && pause > 0 && this.#front > 0) {
          // the requests the batch held up drain first: they count against it, not the baseline
          await this.#sleep(Math.min(pause / 2, yielder.policy.settleMs));
          pause = yielder.settled(host.foreground(), now());
        }
        // the user's cap: keep the average since the last pause at or under maxRate
        const rate = this.o.maxRate ?? 0;
        const wait = rate > 0 ? lastT + (sinceT * 1000) / rate - now() : 0;
        if (this.#front > 0) await this.#sleep(Math.max(pause, wait));
      }
      if (plan.resilience === 'checksum') {
        await this.#writeRecord(header, { seq: this.#seq + 1, front: 0, hot: null });
        this.#kill('after-final-record');
      }
    } catch (err) {
      this.#state = 'failed';
      this.#error = isAtrestError(err) ? err.oneLine() : String(err);
      throw err;
    } finally {
      await this.#closeFiles();
    }
    if (this.o.finalize === false) return true;
    this.#state = 'finishing';
    await finalizeConversion(this.o.image, this.o.header, plan, (n) => this.#kill(n));
    this.#volume?.setConversionFront(0);
    this.#state = 'done';
    this.#note();
    return true;
  }

  async #writeRecord(header: ConvFile, r: ConvertRecord): Promise<void> {
    // durable on return (O_DSYNC): with an attached header, an fdatasync here would also write back
    // every page the user dirtied since the last batch
    await header.writeDurable(encodeRecord(r), recordOffset(this.plan.area.offset, r.seq));
    this.#kill('record-written');
    this.#seq = r.seq;
  }

  /**
   * Source form (plaintext, or the old key's ciphertext) of whole sectors at the view's byte `pos` to
   * the target's ciphertext, each side with its own tweaks. The caller wipes `plain` after writing
   * `enc` (they may be one buffer: ciphers may work in place).
   */
  async #toTarget(raw: Buffer, pos: number): Promise<{ plain: Buffer; enc: Buffer }> {
    const ss = this.plan.sectorSize;
    const plain = await this.o.source.decrypt(raw, ss, this.#source.firstTweak(pos));
    const enc = await this.o.target.encrypt(plain, ss, this.#target.firstTweak(pos));
    return { plain, enc };
  }

  /** Converts [start, end) of the plaintext view. */
  async #batch(image: ConvFile, header: ConvFile, start: number, end: number): Promise<void> {
    const { plan } = this;
    const ss = plan.sectorSize;
    const release = this.#volume ? await this.#volume.lockRange(start, end) : (): void => undefined;
    try {
      if (plan.resilience === 'checksum') {
        // The sums must describe what is on the disk, not what is in the page cache: a user's write to
        // this range that is not yet durable (none can start now: the range is locked) would be hashed,
        // lost in a power loss, and the old data it covered then taken for converted. So the image
        // data the batch covers is made durable before it is read and hashed.
        await image.sync();
        this.#kill('before-hash');
      }
      const raw = Buffer.alloc(end - start);
      await image.read(raw, this.#source.imageOffset(start));
      if (plan.resilience === 'checksum') {
        const sums = sectorSums(raw, ss);
        const seq = this.#seq + 1;
        // durable before the record that names them: the record's digest then always finds them
        await header.writeDurable(sums, sumsOffset(this.plan.area.offset, seq));
        this.#kill('sums-written');
        const digest = sumsDigest(sums);
        await this.#writeRecord(header, {
          seq,
          front: this.#front,
          hot: { start, end, sumsDigest: digest },
        });
        this.#kill('after-arm');
      }
      const { plain, enc } = await this.#toTarget(raw, start);
      this.#kill('before-data-write');
      const half = Math.floor(enc.length / ss / 2) * ss;
      if (
        plan.resilience === 'datashift' &&
        plan.targetOffset - plan.sourceOffset >= plan.batch + READAHEAD_MARGIN
      ) {
        // Durable per write, straight to the device (O_DIRECT|O_DSYNC): no fdatasync of the whole image,
        // which would also write back every page the user dirtied since the last batch. Nothing else
        // touches the target range through the page cache: the batch holds its range lock, foreground
        // I/O reaches the target layout only above it, and no readahead spans the rest of the shift.
        await image.writeDurable(enc.subarray(0, half), this.#target.imageOffset(start), { direct: true });
        this.#kill('mid-data-write');
        await image.writeDurable(enc.subarray(half), this.#target.imageOffset(start + half), {
          direct: true,
        });
        this.#kill('after-data-write');
      } else {
        // same offsets: readahead of a user's read just below the batch can reach it, so no O_DIRECT
        await image.write(enc.subarray(0, half), this.#target.imageOffset(start));
        this.#kill('mid-data-write');
        await image.write(enc.subarray(half), this.#target.imageOffset(start + half));
        this.#kill('after-data-write');
        await image.sync();
      }
      this.#kill('after-data-sync');
      if (plan.resilience === 'datashift') {
        await this.#writeRecord(header, { seq: this.#seq + 1, front: start, hot: null });
        this.#kill('after-checkpoint');
      }
      plain.fill(0);
      this.#front = start;
      this.#volume?.setConversionFront(start);
    } finally {
      release();
    }
  }

  /** Checksum-mode recovery of an armed hot zone (see the top of this file). */
  async #recoverHot(
    image: ConvFile,
    header: ConvFile,
    hot: { start: number; end: number; sumsDigest: Buffer },
  ): Promise<void> {
    const { plan } = this;
    const ss = plan.sectorSize;
    const n = (hot.end - hot.start) / ss;
    const sums = Buffer.alloc(n * SUM_BYTES);
    await header.read(sums, sumsOffset(plan.area.offset, this.#seq));
    if (!sumsDigest(sums).equals(hot.sumsDigest)) {
      return; // the arming never completed, so no data write followed: the zone is intact source
    }
    const raw = Buffer.alloc(hot.end - hot.start);
    await image.read(raw, this.#source.imageOffset(hot.start));
    const now = sectorSums(raw, ss);
    for (let i = 0; i < n; i++) {
      const pos = hot.start + i * ss;
      if (
        !now
          .subarray(i * SUM_BYTES, (i + 1) * SUM_BYTES)
          .equals(sums.subarray(i * SUM_BYTES, (i + 1) * SUM_BYTES))
      )
        continue; // already the target
      const sector = Buffer.from(raw.subarray(i * ss, (i + 1) * ss));
      const { plain, enc } = await this.#toTarget(sector, pos);
      await image.write(enc, this.#target.imageOffset(pos));
      plain.fill(0);
    }
    await image.sync();
    this.#kill('after-recovery');
    await this.#writeRecord(header, { seq: this.#seq + 1, front: hot.start, hot: null });
    this.#front = hot.start;
  }
}

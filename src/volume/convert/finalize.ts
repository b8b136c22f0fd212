// Finishing an in-place conversion whose data is all converted: wipe the sums (and the old keyslot areas), move a sidecar header into the image, drop the mark and plan, remove the sidecar; each step idempotent.
import { randomBytes } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fromSystemError } from '../../errors/index.js';
import {
  DEFAULT_DATA_OFFSET,
  readLuks2,
  RECORD_BYTES,
  unmarkConverting,
  withMetadataLock,
  writeMetadata,
  type ConvertPlan,
} from '../../luks2/index.js';

/**
 * Ends a conversion whose data is all converted: (sidecar) copy the header into the image's first
 * 16 MiB; then drop the mark and the plan token; wipe the record area; remove the sidecar. Every step
 * is idempotent, so a crash anywhere here is finished by the next run.
 */
export async function finalizeConversion(
  image: string,
  header: string,
  plan: ConvertPlan,
  kill: (name: string) => void = () => undefined,
): Promise<void> {
  // One write pass, one sync: the sums hash source sectors (plaintext, for encrypt) and go before the
  // plan does; a reencryption's old keyslot areas are overwritten once more (idempotent after a crash).
  // The records stay (numbers only) until the area is reused, so a crash from here on finds front = 0.
  const wipe = await open(header, 'r+');
  try {
    const sums = plan.area.size - 2 * RECORD_BYTES;
    await wipe.write(Buffer.alloc(sums), 0, sums, plan.area.offset + 2 * RECORD_BYTES);
    for (const a of plan.oldAreas ?? []) await wipe.write(randomBytes(a.size), 0, a.size, a.offset);
    await wipe.sync();
  } finally {
    await wipe.close();
  }
  kill('sums-wiped');
  let finalHeader = header;
  if (plan.sidecar) {
    const src = await open(header, 'r');
    const dst = await open(image, 'r+');
    try {
      const buf = Buffer.alloc(DEFAULT_DATA_OFFSET);
      await src.read(buf, 0, buf.length, 0);
      buf.fill(0, plan.area.offset + 2 * RECORD_BYTES, plan.area.offset + plan.area.size);
      await dst.write(buf, 0, buf.length, 0);
      kill('header-copied');
      await dst.sync();
    } finally {
      await src.close();
      await dst.close();
    }
    finalHeader = image;
    kill('header-synced');
  }
  await withMetadataLock(finalHeader, async () => {
    const meta = await readLuks2(finalHeader, { imagePath: image });
    if (meta.converting) {
      const json = structuredClone(meta.json);
      unmarkConverting(json);
      await writeMetadata(meta, json);
      kill('unmarked');
    }
  });
  if (plan.sidecar) {
    await unlink(header).catch((err: unknown) => {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw fromSystemError(err, header, 'header');
    });
    const d = await open(dirname(image), 'r');
    await d.sync().finally(() => d.close());
    kill('sidecar-removed');
  }
}

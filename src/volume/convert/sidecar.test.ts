import { randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { useTempDir } from '../../test-helpers/temp-dir.test-helper.js';
import { CONVERT_TOKEN, formatLuks2, readLuks2, writeMetadata, type JsonObject } from '../../luks2/index.js';
import { findConversion } from './find.js';
import { startEncrypt, type HeaderRequest } from './plan.js';
import { adoptSidecar, sidecarPath } from './sidecar.js';

const dir = useTempDir('atrest-sidecar-', { perTest: true });
let image: string;
let side: string;

function makeHeader(req: HeaderRequest): Promise<void> {
  return formatLuks2({
    ...req,
    passphrase: Buffer.from('pass'),
    pbkdf2Iterations: 1000,
  }).then(() => undefined);
}

beforeEach(async () => {
  image = join(dir(), 'p.img');
  await writeFile(image, randomBytes(256 * 1024));
  side = (await startEncrypt(image, { sectorSize: 4096, batch: 64 * 1024, makeHeader })).header;
});

const root = process.geteuid?.() === 0;

describe('the sidecar of an attached-header encryption is used only when it can be trusted', () => {
  it('a sidecar atrest made (root, 0600, names this image) is used', async () => {
    expect(side).toBe(sidecarPath(image));
    const found = await findConversion(image, undefined);
    expect(found?.header).toBe(side);
    expect(found?.plan.imageIno).toBeGreaterThan(0);
  });

  it.runIf(root)('not owned by root: refused, naming the file and what to do', async () => {
    await chown(side, 1234, 0);
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      code: 'CORRUPT_HEADER',
      message: expect.stringMatching(
        /p\.img\.atrest-convert\.hdr is owned by uid 1234, not by root/,
      ) as unknown,
      hint: expect.stringMatching(/chown root, chmod 600.*otherwise remove it/) as unknown,
    });
  });

  it('group or other writable: refused', async () => {
    await chmod(side, 0o620);
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      code: 'CORRUPT_HEADER',
      message: expect.stringMatching(/is writable by its group \(mode 620\)/) as unknown,
    });
    await chmod(side, 0o602);
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      message: expect.stringMatching(/is writable by others/) as unknown,
    });
  });

  it('a symbolic link (even to a good sidecar): refused', async () => {
    const elsewhere = join(dir(), 'elsewhere.hdr');
    await rename(side, elsewhere);
    await symlink(elsewhere, side);
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      code: 'CORRUPT_HEADER',
      message: expect.stringMatching(/is a symbolic link/) as unknown,
    });
  });

  it("another image's sidecar (a copy or restore): refused until the operator adopts it", async () => {
    const other = join(dir(), 'q.img');
    await writeFile(other, randomBytes(256 * 1024));
    await copyFile(side, sidecarPath(other));
    await chmod(sidecarPath(other), 0o600);
    await expect(findConversion(other, undefined)).rejects.toMatchObject({
      code: 'CORRUPT_HEADER',
      message: expect.stringMatching(
        /q\.img\.atrest-convert\.hdr does not belong to .*q\.img: its plan names the file with inode/,
      ) as unknown,
      hint: expect.stringMatching(/atrest encrypt IMAGE --adopt-sidecar/) as unknown,
    });
    await adoptSidecar(other);
    expect((await findConversion(other, undefined))?.header).toBe(sidecarPath(other));
  });

  it('a sidecar whose plan is for an image of another size: refused, even adopted', async () => {
    await writeFile(image, randomBytes(128 * 1024));
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      message: expect.stringMatching(
        /its plan is for a 262144-byte image, and .* is 131072 bytes/,
      ) as unknown,
    });
    await expect(adoptSidecar(image)).rejects.toMatchObject({ code: 'CORRUPT_HEADER' });
  });

  it('a sidecar whose plan names no image (older atrest): refused', async () => {
    const meta = await readLuks2(side, { imagePath: image });
    const json = structuredClone(meta.json);
    for (const t of Object.values(json.tokens as Record<string, JsonObject>))
      if (t.type === CONVERT_TOKEN) delete (t.atrest_plan as JsonObject).imageIno;
    await writeMetadata(meta, json);
    await expect(findConversion(image, undefined)).rejects.toMatchObject({
      message: expect.stringMatching(/does not name the image it belongs to/) as unknown,
    });
    await adoptSidecar(image);
    expect((await findConversion(image, undefined))?.plan.imageIno).toBeGreaterThan(0);
    expect((await readFile(image)).length).toBe(256 * 1024);
  });
});

import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import { useTempDir } from '../test-helpers/temp-dir.test-helper.js';
import { STALE_TEMP_MS } from './durable-file.js';
import { knownVolumes, recordKnownVolume, registryDir } from './registry.js';

const UUID = '0123abcd-0000-4000-8000-00000000beef';
const dir = useTempDir('atrest-registry-', { perTest: true });
let store: string;

beforeEach(() => {
  store = join(dir(), 'keys');
});

/** Starts a write that stops for good at `point` (a crash: nothing after it runs); resolves when there. */
function crashAt(point: string, header: string): Promise<void> {
  return new Promise<void>((reached, failed) => {
    recordKnownVolume(store, UUID, header, header, {
      killPoint: (name) => {
        if (name !== point) return;
        reached();
        return new Promise<void>(() => undefined); // never continues
      },
    }).then(() => failed(new Error(`write finished without reaching ${point}`)), failed);
  });
}

const entries = async (): Promise<string[]> => (await readdir(registryDir(store))).sort();

describe('volume registry', () => {
  it('records volumes in a 0700 directory as 0600 files, one per UUID, and reads them back', async () => {
    await recordKnownVolume(store, UUID.toUpperCase(), '/a.hdr', '/a.img');
    await recordKnownVolume(store, 'not-a-uuid', '/x.img');
    expect(await knownVolumes(store)).toEqual([{ uuid: UUID, header: '/a.hdr', image: '/a.img' }]);
    expect((await stat(registryDir(store))).mode & 0o777).toBe(0o700);
    expect((await stat(join(registryDir(store), UUID))).mode & 0o777).toBe(0o600);
    expect(await entries()).toEqual([UUID]);
  });

  for (const [point, after] of [
    ['temp-written', 'old'],
    ['temp-synced', 'old'],
    ['renamed', 'new'],
  ] as const) {
    it(`a crash at ${point} leaves the ${after} record whole, and the next write cleans up`, async () => {
      await recordKnownVolume(store, UUID, '/old.img');
      await crashAt(point, '/new.img');
      const record = await readFile(join(registryDir(store), UUID), 'utf8');
      expect(record).toBe(after === 'old' ? '/old.img\n/old.img\n' : '/new.img\n/new.img\n');
      expect(await knownVolumes(store)).toEqual([
        { uuid: UUID, header: `/${after}.img`, image: `/${after}.img` },
      ]);
      const temps = (await entries()).filter((n) => n !== UUID);
      expect(temps).toHaveLength(after === 'old' ? 1 : 0);
      // the crashed writer's temp file, once stale, is swept by the next write; readers ignore it meanwhile
      const old = new Date(Date.now() - STALE_TEMP_MS - 5000);
      for (const n of temps) await utimes(join(registryDir(store), n), old, old);
      await recordKnownVolume(store, UUID, '/third.img');
      expect(await entries()).toEqual([UUID]);
      expect((await knownVolumes(store))[0]?.header).toBe('/third.img');
    });
  }

  it('a failed write removes its temp file and keeps the old record', async () => {
    await recordKnownVolume(store, UUID, '/old.img');
    await expect(
      recordKnownVolume(store, UUID, '/new.img', '/new.img', {
        killPoint: (name) => {
          if (name === 'temp-synced') throw Object.assign(new Error('disk gone'), { code: 'EIO' });
        },
      }),
    ).rejects.toMatchObject({ code: 'IO' });
    expect(await entries()).toEqual([UUID]);
    expect((await knownVolumes(store))[0]?.header).toBe('/old.img');
  });

  it('leaves fresh temp files of other writers alone, and keeps a damaged record as a volume', async () => {
    await mkdir(registryDir(store), { recursive: true, mode: 0o700 });
    const fresh = `.${UUID}.tmp-0123456789ab`;
    await writeFile(join(registryDir(store), fresh), 'partial');
    const torn = '11111111-2222-4333-8444-555555555555';
    await writeFile(join(registryDir(store), torn), ''); // torn by an older, non-atomic writer
    await recordKnownVolume(store, UUID, '/a.img');
    expect(await entries()).toContain(fresh);
    expect(await knownVolumes(store)).toEqual([
      { uuid: UUID, header: '/a.img', image: '/a.img' },
      { uuid: torn, header: '', image: '' },
    ]);
  });
});

// A real Volume (in-process XTS) served through a real FUSE mount on a file: tools, durability, no plaintext leaks.
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { xtsInPlace } from '../src/crypto/xts.js';
import { fuseMountAt } from '../src/fuse/index.js';
import { makeTempDir, removeTempDir, serveTestDisk, sh, shOk, type ServedDisk } from './helpers/fuse.js';

let dir: string;
const open_: ServedDisk[] = [];

async function serve(opts: Parameters<typeof serveTestDisk>[1] = {}): Promise<ServedDisk> {
  const d = await serveTestDisk(dir, opts);
  open_.push(d);
  return d;
}

beforeAll(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  for (const d of open_.splice(0)) {
    await sh(`losetup -j ${d.diskPath} -O NAME -n | xargs -r -n1 losetup -d`, 30_000);
    await d.close();
  }
});
afterAll(async () => {
  await removeTempDir(dir);
});

describe('FUSE disk file', () => {
  it('is a regular file of the volume size on a fuse.atrest mount; dd/cat round trip', async () => {
    const d = await serve({ size: 32 * 1024 * 1024 });
    const st = await stat(d.diskPath);
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(32 * 1024 * 1024);
    expect(st.mode & 0o777).toBe(0o600);
    const m = await fuseMountAt(d.diskPath);
    expect(m?.fsType).toBe('fuse.atrest');
    const src = join(dir, 'src');
    await shOk(`head -c 5000000 /dev/urandom > ${src}`);
    await shOk(`dd if=${src} of=${d.diskPath} bs=1M conv=notrunc status=none`);
    await shOk(`cmp -n 5000000 ${src} ${d.diskPath}`);
    // unaligned, odd-size pieces through cat / dd skip
    await shOk(
      `dd if=${src} of=${d.diskPath} bs=777 seek=12345 oflag=seek_bytes conv=notrunc count=50 status=none`,
    );
    await shOk(`cmp -n 38850 ${src} <(tail -c +12346 ${d.diskPath})`);
    await shOk(`cat ${d.diskPath} > /dev/null`);
    await d.close();
    expect(await fuseMountAt(d.diskPath)).toBeNull();
    await d.close(); // idempotent
  });

  it('passes fio crc32c verification with random 4k and sequential 1M I/O', async () => {
    const d = await serve({ size: 48 * 1024 * 1024 });
    const common = `--filename=${d.diskPath} --ioengine=libaio --iodepth=8 --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse`;
    await shOk(`fio --name=r4k --rw=randwrite --bs=4k --size=16M --direct=1 ${common}`, 90_000);
    await shOk(`fio --name=s1m --rw=write --bs=1M --size=48M --direct=1 ${common}`, 90_000);
    await shOk(`fio --name=rr --rw=randrw --bs=64k --size=32M --direct=0 ${common}`, 90_000);
  });

  it('works with qemu-io, buffered and O_DIRECT (-t none)', async () => {
    const d = await serve({ size: 16 * 1024 * 1024 });
    for (const cache of ['writeback', 'none']) {
      const r = await shOk(
        `qemu-io -f raw -t ${cache} -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' -c 'write -P 0x5c 4096512 65536' -c 'read -P 0x5c 4096512 65536' -c flush ${d.diskPath}`,
      );
      expect(r).not.toMatch(/fail|error/i);
      expect(r).toMatch(/read 1048576\/1048576 bytes/);
    }
    const r = await sh(`qemu-io -f raw -t none -c 'read -P 0xab 0 1M' ${d.diskPath}`);
    expect(r.stdout).not.toMatch(/fail/i);
  });

  it('makes data durable in the image on fsync, as XTS ciphertext and nothing plain', async () => {
    const d = await serve({ size: 16 * 1024 * 1024 });
    const marker = Buffer.from('ATREST-PLAINTEXT-MARKER-0123456789abcdef');
    const plain = Buffer.alloc(1024 * 1024);
    for (let o = 0; o < plain.length; o += marker.length) marker.copy(plain, o);
    const src = join(dir, 'marker');
    const fh = await open(src, 'w');
    await fh.writeFile(plain);
    await fh.close();
    const at = 3 * 1024 * 1024;
    await shOk(`dd if=${src} of=${d.diskPath} bs=1M seek=3 conv=notrunc,fsync status=none`);
    expect(d.fsyncs.data + d.fsyncs.full).toBeGreaterThan(0);
    await shOk(`dd if=${src} of=${d.diskPath} bs=64k seek=100 count=1 oflag=dsync conv=notrunc status=none`);
    // the backing image, read directly (not through the mount), decrypts to what was written
    const img = await readFile(d.image);
    const ct = Buffer.from(img.subarray(d.dataOffset + at, d.dataOffset + at + plain.length));
    expect(ct.equals(plain)).toBe(false);
    xtsInPlace('decrypt', d.key, ct, 4096, at / 512 + d.ivTweak);
    expect(ct.equals(plain)).toBe(true);
    // no trace of the plaintext anywhere in the image: neither the marker nor any 16-byte piece of it
    for (let i = 0; i + 16 <= marker.length; i += 8) {
      expect(img.indexOf(marker.subarray(i, i + 16))).toBe(-1);
    }
  });

  it('keeps every byte of concurrent overlapping writes from two processes', async () => {
    const d = await serve({ size: 8 * 1024 * 1024, sectorSize: 4096 });
    await shOk(`dd if=/dev/zero of=${d.diskPath} bs=1M count=1 conv=notrunc status=none`);
    // A writes bytes [200i, 200i+100), B [200i+100, 200i+200): disjoint bytes sharing every sector
    const writer = (value: number, shift: number): string =>
      `node -e "const fs=require('fs');const fd=fs.openSync('${d.diskPath}','r+');const b=Buffer.alloc(100,${value});` +
      `for(let i=0;i<4000;i++)fs.writeSync(fd,b,0,100,i*200+${shift});fs.closeSync(fd)"`;
    await shOk(`${writer(0xaa, 0)} & ${writer(0xbb, 100)} & wait`, 90_000);
    const got = await d.volume.read(0, 800_000);
    for (let i = 0; i < 4000; i++) {
      expect(got.subarray(i * 200, i * 200 + 100).every((b) => b === 0xaa)).toBe(true);
      expect(got.subarray(i * 200 + 100, i * 200 + 200).every((b) => b === 0xbb)).toBe(true);
    }
    // truly overlapping ranges: each byte ends up as one of the two, the rest intact
    await shOk(
      `dd if=<(head -c 1048576 /dev/zero | tr '\\0' '\\1') of=${d.diskPath} bs=4321 conv=notrunc status=none iflag=fullblock & ` +
        `dd if=<(head -c 1048576 /dev/zero | tr '\\0' '\\2') of=${d.diskPath} bs=5003 seek=524288 oflag=seek_bytes conv=notrunc status=none iflag=fullblock & wait`,
    );
    const both = await d.volume.read(0, 1_572_864);
    expect(both.subarray(0, 524288).every((b) => b === 1)).toBe(true);
    expect(both.subarray(524288, 1048576).every((b) => b === 1 || b === 2)).toBe(true);
    expect(both.subarray(1048576).every((b) => b === 2)).toBe(true);
  });

  it('refuses writes on a read-only disk and does not resize', async () => {
    const d = await serve({ size: 4 * 1024 * 1024, readOnly: true, plain: true });
    const r = await sh(`dd if=/dev/zero of=${d.diskPath} bs=4k count=1 conv=notrunc status=none`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/read-only/i);
    await shOk(`dd if=${d.diskPath} of=/dev/null bs=1M status=none`);
    const w = await serve({ size: 4 * 1024 * 1024 });
    const t = await sh(`truncate -s 1M ${w.diskPath}`);
    expect(t.code).not.toBe(0);
    await shOk(`truncate -s 4M ${w.diskPath}`);
  });

  it('spawns helpers without the /dev/fuse descriptor', async () => {
    const d = await serve({ size: 1024 * 1024, plain: true });
    const fds = await shOk('ls -l /proc/self/fd/');
    expect(fds).not.toMatch(/\/dev\/fuse/);
    expect(d.disk.connection).toBeGreaterThan(0);
  });

  it('closes even while a process keeps the disk file open (lazy unmount, then abort)', async () => {
    const d = await serve({ size: 1024 * 1024, plain: true });
    const holder = sh(`exec 3<${d.diskPath}; sleep 3`, 30_000);
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    await d.close();
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(await fuseMountAt(d.diskPath)).toBeNull();
    await holder;
  });

  it('carries ext4 on a loop device (mkfs, mount, write, fsck)', async () => {
    const d = await serve({ size: 64 * 1024 * 1024 });
    const mnt = join(dir, 'mnt');
    const dev = (await shOk(`losetup --find --show --sector-size 4096 ${d.diskPath}`)).trim();
    try {
      await shOk(`mkfs.ext4 -q -F ${dev}`);
      await shOk(`mkdir -p ${mnt} && mount ${dev} ${mnt}`);
      try {
        await shOk(`head -c 8000000 /dev/urandom > ${mnt}/f && sha256sum ${mnt}/f > ${dir}/sum && sync`);
      } finally {
        await sh(`umount ${mnt}`);
      }
      await shOk(`echo 3 > /proc/sys/vm/drop_caches; fsck.ext4 -n -f ${dev}`);
      await shOk(
        `mount -o ro ${dev} ${mnt} && (cd / && sha256sum -c ${dir}/sum); r=$?; umount ${mnt}; exit $r`,
      );
    } finally {
      await sh(`umount ${mnt} 2>/dev/null; losetup -d ${dev}`);
    }
  });
});

// Child process for the kernel backend's exit test: serve a disk, write and read through it, close, then let the event loop end on its own.
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sh, shOk } from './fuse.js';
import { serveKernelTestDisk } from './kernel-disk.js';

const dir = await mkdtemp(join(tmpdir(), 'atrest-kexit-'));
const d = await serveKernelTestDisk(dir, { size: 8 * 1024 * 1024 });
await shOk(`dd if=/dev/urandom of=${d.diskPath} bs=64k count=16 oflag=direct conv=notrunc status=none`);
await shOk(`dd if=${d.diskPath} of=/dev/null bs=1M iflag=direct status=none`);
await d.close();
await sh(`rm -rf ${dir}`);
process.stdout.write(`closed workers=${d.disk.stats().workers}\n`);
// no process.exit(): the process must end by itself once close() has let the workers go

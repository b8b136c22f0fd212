// Test-only DiskIo for the kernel backend's workers: the volume layer's openDiskIo, with reads from GATE_FROM on held while a shared gate word is set.
import type { Buffer } from 'node:buffer';
import type { DiskIo, DiskIoDescriptor } from '../../src/volume/disk-io.js';
import { openDiskIo as openReal } from '../../src/volume/disk-io-open.js';

/** Word indexes in the descriptor's extra `gate` Int32Array. */
export const Gate = { CLOSED: 0, BLOCKED: 1, FROM: 2, DIE: 3 } as const;

export function newGate(fromByte: number): Int32Array {
  const g = new Int32Array(new SharedArrayBuffer(16));
  g[Gate.FROM] = fromByte;
  return g;
}

/**
 * Holds reads at or past gate[FROM] while gate[CLOSED] is 1 (counted in gate[BLOCKED]); ends the
 * serving thread on any read while gate[DIE] is 1.
 */
export function openDiskIo(d: DiskIoDescriptor & { gate?: Int32Array }): DiskIo {
  const io = openReal(d);
  const gate = d.gate;
  if (gate === undefined) return io;
  return {
    size: io.size,
    readOnly: io.readOnly,
    sectorSize: io.sectorSize,
    readInto(position: number, length: number, out: Buffer): number {
      // a serving thread dying on its own (process.exit in a worker ends only that thread)
      if (Atomics.load(gate, Gate.DIE) === 1) process.exit(1);
      if (position >= Atomics.load(gate, Gate.FROM) && Atomics.load(gate, Gate.CLOSED) === 1) {
        Atomics.add(gate, Gate.BLOCKED, 1);
        while (Atomics.load(gate, Gate.CLOSED) === 1) Atomics.wait(gate, Gate.CLOSED, 1, 1000);
        Atomics.sub(gate, Gate.BLOCKED, 1);
      }
      return io.readInto(position, length, out);
    },
    write: (p, data) => io.write(p, data),
    sync: (datasync) => io.sync(datasync),
    refresh: () => io.refresh(),
    close: () => io.close(),
  };
}

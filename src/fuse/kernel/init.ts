// INIT negotiation of the kernel backend: which protocol minor and which features to take from what the kernel offers.
import { FUSE_KERNEL_VERSION, FUSE_MAX_KNOWN_MINOR, FUSE_MIN_MINOR, Init } from './abi.js';
import type { InitInFields, InitOutFields } from './codec.js';

/** 1 MiB requests: 256 pages of 4 KiB (needs FUSE_MAX_PAGES, 7.28). */
export const MAX_PAGES = 256;
export const MAX_WRITE = MAX_PAGES * 4096;
/** Without FUSE_MAX_PAGES the kernel splits requests at 32 pages. */
export const COMPAT_MAX_WRITE = 32 * 4096;
export const MAX_BACKGROUND = 128;
export const CONGESTION_THRESHOLD = 96;

/**
 * What this server asks for when offered: async direct I/O (many requests in flight per file),
 * 1 MiB requests, big writes, parallel lookups (harmless for one file). Never the writeback cache
 * (a write must reach the image before it is acknowledged), never ABORT_ERROR (workers expect ENODEV).
 */
export const WANTED_FLAGS = Init.ASYNC_DIO | Init.MAX_PAGES | Init.BIG_WRITES | Init.PARALLEL_DIROPS;

export type InitDecision =
  | { kind: 'reply'; out: InitOutFields }
  /** The kernel speaks a newer major: answer with ours only and expect a second INIT. */
  | { kind: 'major'; out: InitOutFields }
  | { kind: 'refuse'; reason: string };

/** Decides the INIT reply. `maxMinor` caps the negotiated minor (tests force older protocols). */
export function negotiateInit(k: InitInFields, maxMinor = FUSE_MAX_KNOWN_MINOR): InitDecision {
  const cap = Math.min(Math.max(maxMinor, FUSE_MIN_MINOR), FUSE_MAX_KNOWN_MINOR);
  const empty = {
    maxReadahead: 0,
    flags: 0,
    flags2: 0,
    maxBackground: 0,
    congestionThreshold: 0,
    maxWrite: 0,
    timeGran: 0,
    maxPages: 0,
  };
  if (k.major > FUSE_KERNEL_VERSION) {
    return { kind: 'major', out: { major: FUSE_KERNEL_VERSION, minor: cap, ...empty } };
  }
  if (k.major < FUSE_KERNEL_VERSION || k.minor < FUSE_MIN_MINOR) {
    return {
      kind: 'refuse',
      reason:
        `the kernel offers FUSE protocol ${k.major}.${k.minor}; the kernel backend needs ` +
        `${FUSE_KERNEL_VERSION}.${FUSE_MIN_MINOR} or newer (Linux 5.8+)`,
    };
  }
  const minor = Math.min(k.minor, cap);
  const flags = (k.flags & WANTED_FLAGS) >>> 0;
  const pages = (flags & Init.MAX_PAGES) !== 0;
  return {
    kind: 'reply',
    out: {
      major: FUSE_KERNEL_VERSION,
      minor,
      maxReadahead: k.maxReadahead,
      flags,
      flags2: 0,
      maxBackground: MAX_BACKGROUND,
      congestionThreshold: CONGESTION_THRESHOLD,
      maxWrite: pages ? MAX_WRITE : COMPAT_MAX_WRITE,
      timeGran: 1,
      maxPages: pages ? MAX_PAGES : 0,
    },
  };
}

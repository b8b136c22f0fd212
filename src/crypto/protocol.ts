// Messages between the crypto pool (main thread) and its workers.
import type { XtsDirection } from './xts.js';

export interface WorkerInit {
  keyring: SharedArrayBuffer;
  /** Name of the BroadcastChannel that carries wipe notices and their acknowledgements. */
  channel: string;
}

export interface XtsTask {
  op: XtsDirection;
  slot: number;
  generation: number;
  sectorSize: number;
  firstTweak: number;
  /** A reusable shared slab holding the sectors at offset 0; the worker works on it in place. */
  slab: SharedArrayBuffer;
  length: number;
}

/** What a worker replies instead of throwing across threads. */
export interface TaskError {
  code: string;
  message: string;
}

export type ChannelMessage =
  | { type: 'ready'; threadId: number }
  | { type: 'wipe'; slot: number; generation: number; id: number }
  | { type: 'wiped'; id: number; threadId: number };

export function isChannelMessage(m: unknown): m is ChannelMessage {
  if (typeof m !== 'object' || m === null) return false;
  const t = (m as { type?: unknown }).type;
  return t === 'ready' || t === 'wipe' || t === 'wiped';
}

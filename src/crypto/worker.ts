// A crypto worker thread: runs XTS tasks with keys from the shared keyring, one cached key schedule per slot.
import { BroadcastChannel, threadId, workerData } from 'node:worker_threads';
import { isAtrestError } from '../errors/index.js';
import { KeyCache } from './key-cache.js';
import { isChannelMessage, type TaskError, type WorkerInit, type XtsTask } from './protocol.js';

const init = workerData as WorkerInit;
const keys = new KeyCache(init.keyring);

const channel = new BroadcastChannel(init.channel);
channel.onmessage = (event: MessageEvent): void => {
  const msg: unknown = event.data;
  if (!isChannelMessage(msg) || msg.type !== 'wipe') return;
  keys.dropGeneration(msg.slot, msg.generation);
  channel.postMessage({ type: 'wiped', id: msg.id, threadId });
};
channel.postMessage({ type: 'ready', threadId });

function fail(code: string, message: string): TaskError {
  return { code, message };
}

/** Runs one task in place on its slab; replies null or a TaskError, never throws. */
export default function run(task: XtsTask): null | TaskError {
  try {
    const cipher = keys.cipherFor(task.slot, task.generation);
    if (cipher === null) return fail('LOCKED', 'the volume key has been wiped');
    const data = new Uint8Array(task.slab, 0, task.length);
    cipher.inPlace(task.op, data, task.sectorSize, task.firstTweak);
    return null;
  } catch (err) {
    if (isAtrestError(err)) return fail(err.code, err.message);
    return fail('INTERNAL', `crypto worker: ${err instanceof Error ? err.message : String(err)}`);
  }
}

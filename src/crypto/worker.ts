// A crypto worker thread: runs XTS tasks with keys from the shared keyring, one cached key schedule per slot.
import { BroadcastChannel, threadId, workerData } from 'node:worker_threads';
import { isAtrestError } from '../errors/index.js';
import { Keyring } from './keyring.js';
import { isChannelMessage, type TaskError, type WorkerInit, type XtsTask } from './protocol.js';
import { XtsCipher } from './xts.js';

const init = workerData as WorkerInit;
const keyring = new Keyring(init.keyring);
const cache = new Map<number, { generation: number; cipher: XtsCipher }>();

function drop(slot: number): void {
  const entry = cache.get(slot);
  if (entry) {
    entry.cipher.wipe();
    cache.delete(slot);
  }
}

/** The key schedule for (slot, generation), made once from shared memory; null once wiped. */
function cipherFor(slot: number, generation: number): XtsCipher | null {
  if (keyring.generation(slot) !== generation) {
    drop(slot);
    return null;
  }
  const entry = cache.get(slot);
  if (entry && entry.generation === generation) return entry.cipher;
  drop(slot);
  const key = Buffer.alloc(keyring.keyLength(slot));
  let cipher: XtsCipher | null = null;
  let failure: unknown = null;
  try {
    key.set(keyring.keyView(slot).subarray(0, key.length));
    cipher = new XtsCipher(key);
  } catch (err) {
    failure = err;
  } finally {
    key.fill(0);
  }
  // wiped while we copied it: the copy may be part zeros (even "weak"), so never use it
  if (keyring.generation(slot) !== generation) {
    cipher?.wipe();
    return null;
  }
  if (cipher === null) throw failure;
  cache.set(slot, { generation, cipher });
  return cipher;
}

const channel = new BroadcastChannel(init.channel);
channel.onmessage = (event: MessageEvent): void => {
  const msg: unknown = event.data;
  if (!isChannelMessage(msg) || msg.type !== 'wipe') return;
  const entry = cache.get(msg.slot);
  if (entry && entry.generation === msg.generation) drop(msg.slot);
  channel.postMessage({ type: 'wiped', id: msg.id, threadId });
};
channel.postMessage({ type: 'ready', threadId });

function fail(code: string, message: string): TaskError {
  return { code, message };
}

/** Runs one task in place on its slab; replies null or a TaskError, never throws. */
export default function run(task: XtsTask): null | TaskError {
  try {
    const cipher = cipherFor(task.slot, task.generation);
    if (cipher === null) return fail('LOCKED', 'the volume key has been wiped');
    const data = new Uint8Array(task.slab, 0, task.length);
    if (task.op === 'encrypt') cipher.encryptInPlace(data, task.sectorSize, task.firstTweak);
    else cipher.decryptInPlace(data, task.sectorSize, task.firstTweak);
    return null;
  } catch (err) {
    if (isAtrestError(err)) return fail(err.code, err.message);
    return fail('INTERNAL', `crypto worker: ${err instanceof Error ? err.message : String(err)}`);
  }
}

// Reads a passphrase from --key-file FILE, or from standard input with --key-file - (the caller wipes it).
import { AtrestError } from '../errors/index.js';
import { readKeyFile } from '../keys/index.js';

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  try {
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  } finally {
    for (const c of chunks) c.fill(0);
  }
}

/** A key from --key-file FILE, or from standard input with --key-file -. */
export async function loadKey(keyFile: string): Promise<Buffer> {
  if (keyFile !== '-') return readKeyFile(keyFile);
  const key = await readStdin();
  if (key.length === 0) throw new AtrestError('USAGE', 'no key arrived on standard input');
  return key;
}

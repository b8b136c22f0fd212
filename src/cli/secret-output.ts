// Prints a secret (a recovery passphrase) to standard output from its Buffer, never from a string, and zeroes the copy it wrote.
import { Buffer } from 'node:buffer';
import type { Writable } from 'node:stream';

/**
 * Writes `secret` and a newline to `out` (default stdout) as one Buffer, waits until the stream has
 * taken it (a pipe may still read it until then), then zeroes that copy. The caller wipes `secret`.
 */
export function writeSecretLine(secret: Uint8Array, out: Writable = process.stdout): Promise<void> {
  const line = Buffer.alloc(secret.length + 1);
  line.set(secret, 0);
  line[secret.length] = 0x0a;
  return new Promise((resolve, reject) => {
    try {
      out.write(line, (err) => {
        line.fill(0);
        if (err) reject(err);
        else resolve();
      });
    } catch (err) {
      line.fill(0);
      reject(err instanceof Error ? err : new Error(String(err)));
    }
  });
}

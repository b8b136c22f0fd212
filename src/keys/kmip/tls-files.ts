// The KMIP provider's TLS files (CA, client certificate, client key), named by providers.json: read with the same trust checks as the configuration.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { AtrestError } from '../../errors/index.js';
import { checkTrusted } from '../trusted-file.js';

/** Reads one configured TLS file (CA, certificate, key): root-owned, not writable by others; the key not readable by others. */
export async function readTlsFile(path: string, what: string, secret: boolean): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new AtrestError(
      'KEY_UNAVAILABLE',
      `cannot read the KMIP ${what} ${path}: ${(err as Error).message}`,
      {
        path,
        hint: 'check this provider in providers.json',
        cause: err,
      },
    );
  }
  try {
    const st = await fh.stat();
    checkTrusted(path, st, `KMIP ${what}`);
    if (secret && (st.mode & 0o007) !== 0) {
      throw new AtrestError('USAGE', `refusing KMIP ${what} ${path}: others may read it`, {
        path,
        hint: `fix with: chmod o-rwx ${path}`,
      });
    }
    if (st.size > 1024 * 1024)
      throw new AtrestError('USAGE', `KMIP ${what} ${path} is larger than 1 MiB`, { path });
    return await fh.readFile();
  } finally {
    await fh.close();
  }
}

// Whether root may trust a file it is told to load or read (configuration, PKCS#11 module, KMIP TLS files): owned by root
// or the running user, not writable by group or others. Imports nothing of keys/, so every provider can use it.
import { AtrestError } from '../errors/index.js';

function runningUid(): number {
  return typeof process.getuid === 'function' ? process.getuid() : 0;
}

function mode(m: number): string {
  return (m & 0o777).toString(8).padStart(3, '0');
}

/**
 * Refuses a configuration file (or its directory) that someone other than root (or the running user)
 * owns, or that group or others may write: whoever can change it chooses what root loads.
 */
export function checkTrusted(path: string, st: { uid: number; mode: number }, what: string): void {
  if (st.uid !== 0 && st.uid !== runningUid()) {
    throw new AtrestError('USAGE', `refusing ${what} ${path}: owned by uid ${st.uid}, not by root`, {
      path,
      hint: `fix with: chown root: ${path}`,
    });
  }
  if ((st.mode & 0o022) !== 0) {
    throw new AtrestError(
      'USAGE',
      `refusing ${what} ${path}: mode ${mode(st.mode)} lets group or others change it`,
      { path, hint: `fix with: chmod go-w ${path}` },
    );
  }
}

// The one-line human messages of format, open, encrypt, reencrypt and config check (what a person reads after a command).
import { formatBytes } from '../size.js';

/** `format` with a passphrase: what was made. */
export function formattedWithPassphrase(image: string, size: number, uuid: string): string {
  return `formatted ${image}: LUKS2, aes-xts-plain64, ${formatBytes(size)}, uuid ${uuid}`;
}

/** `format` bound to a KEK: what was made and which key (`who`, redacted) its key slot 0 is bound to. */
export function formattedWithKek(
  image: string,
  size: number,
  uuid: string,
  who: string,
  version: number,
): string {
  return (
    `formatted ${image}: LUKS2, aes-xts-plain64, ${formatBytes(size)}, uuid ${uuid}, ` +
    `key slot 0 bound to ${who} (version ${version})`
  );
}

/** `open`: the plaintext file and, with --loop, the loop device, one per line (scripts read them). */
export function printOpened(diskPath: string, loopDevice: string | null | undefined): void {
  console.log(diskPath);
  if (loopDevice) console.log(loopDevice);
}

/** `encrypt --pause/--resume NAME`. */
export function conversionControlled(action: 'pause' | 'resume', name: string): string {
  return `${action === 'pause' ? 'paused' : 'resumed'} the conversion of ${name}`;
}

/** Printed (on stderr) before each new recovery passphrase a re-encryption makes. */
export const NEW_RECOVERY_KEY =
  'new recovery key (the old one no longer works; shown once, store it somewhere safe):';

/** `reencrypt NAME` of an open volume: the daemon does the work. */
export function reencryptingInDaemon(name: string): string {
  return `re-encrypting ${name} under a new volume key in the daemon; see atrest status ${name}`;
}

/** `config check`: one line per file checked. */
export function configChecked(file: string, volumes: number): string {
  return `${file}: ${volumes} volume(s), no problems`;
}

export function providersChecked(file: string, providers: number): string {
  return `${file}: ${providers} key provider(s), no problems`;
}

// The platform key's lifecycle as the key manager drives it: its store, the record of volumes bound to it, new versions.
import type { KekRef } from './kek.js';
import { PlatformKekProvider } from './platform.js';
import { recordKnownVolume } from './registry.js';

/** The platform key store of one key manager (default /var/lib/atrest/keys). */
export class PlatformKeys {
  constructor(private readonly keyStoreDir: string | undefined) {}

  /** A provider over the store (opened afresh for each use: the store is files, nothing is held). */
  provider(): PlatformKekProvider {
    return new PlatformKekProvider(this.keyStoreDir === undefined ? {} : { keyStoreDir: this.keyStoreDir });
  }

  /**
   * Records that volume `uuid` (header and image files) uses the platform key, so deleting a platform
   * key version can say which volumes may still need it.
   */
  async remember(uuid: string, header: string, image: string = header): Promise<void> {
    await recordKnownVolume(this.provider().dir, uuid, header, image);
  }

  /** Makes a new platform KEK version; older versions are kept. */
  rotate(): Promise<KekRef> {
    return this.provider().rotatePlatform();
  }
}

// The refusal of `open` on an image without a LUKS2 header when no in-place encryption was asked for.
import { AtrestError, isAtrestError } from '../errors/index.js';

/**
 * `open` never starts encrypting an image on its own: without `--encrypt` (or `"encrypt": true` in the
 * daemon configuration) an image with no LUKS2 header is refused, naming the two likely causes. Other
 * errors pass through unchanged.
 */
export function refuseNotLuks2(
  err: unknown,
  image: string,
  req: { header?: string; encrypt?: boolean },
): unknown {
  if (!isAtrestError(err) || err.code !== 'NOT_LUKS2' || req.header !== undefined) return err;
  if (/LUKS1|LUKS version/.test(err.message)) return err;
  if (req.encrypt === true) return err;
  return new AtrestError(
    'NOT_LUKS2',
    `${image} is not a LUKS2 image: either its header is detached and --header was not given, or it is plaintext`,
    {
      path: image,
      hint:
        'a detached header: pass --header FILE; a plaintext image to encrypt in place (it is rewritten): ' +
        'atrest open --encrypt IMAGE NAME (or "encrypt": true for it in volumes.json), or atrest encrypt IMAGE',
      cause: err,
    },
  );
}

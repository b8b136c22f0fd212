// The NOT_OPEN error for a volume name the daemon does not serve, built in one place.
import { AtrestError } from '../errors/index.js';

/** NOT_OPEN: no open volume is named `name` (status lists the open ones). */
export function notOpen(name: string): AtrestError {
  return new AtrestError('NOT_OPEN', `no open volume is named ${name}`, { hint: 'see `atrest status`' });
}

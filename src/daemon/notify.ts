// systemd readiness protocol (sd_notify) through `systemd-notify`: READY, STATUS, WATCHDOG, STOPPING.
import { spawnHelper } from '../fuse/index.js';

/**
 * Sends sd_notify messages when systemd gave us NOTIFY_SOCKET; a no-op otherwise. Node has no unix
 * datagram sockets, so `systemd-notify` (from the systemd package) sends them; the unit needs
 * NotifyAccess=all because that helper is a child of the daemon. Never throws: a lost status line
 * must not take the service down.
 */
export class Notifier {
  private watchdog: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly env: NodeJS.ProcessEnv = process.env) {}

  get enabled(): boolean {
    return typeof this.env.NOTIFY_SOCKET === 'string' && this.env.NOTIFY_SOCKET !== '';
  }

  /** Sends `KEY=value` assignments as one message (in order with earlier ones). */
  send(...assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve();
    const args = assignments.map((a) => a.replace(/\n/g, ' '));
    this.chain = this.chain.then(async () => {
      await spawnHelper('systemd-notify', args, { timeoutMs: 5000 }).catch(() => undefined);
    });
    return this.chain;
  }

  status(text: string): Promise<void> {
    return this.send(`STATUS=${text}`);
  }

  ready(status: string): Promise<void> {
    return this.send('READY=1', `STATUS=${status}`, `MAINPID=${process.pid}`);
  }

  stopping(status: string): Promise<void> {
    this.stopWatchdog();
    return this.send('STOPPING=1', `STATUS=${status}`);
  }

  /** With WatchdogSec= (WATCHDOG_USEC), pings at half the interval. */
  startWatchdog(): void {
    const usec = Number(this.env.WATCHDOG_USEC ?? 0);
    const pid = Number(this.env.WATCHDOG_PID ?? process.pid);
    if (!this.enabled || !(usec > 0) || pid !== process.pid || this.watchdog) return;
    this.watchdog = setInterval(() => void this.send('WATCHDOG=1'), Math.max(500, usec / 2000));
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
  }
}

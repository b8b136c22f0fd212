// How a conversion's progress looks: one line (percent, bytes, rate, ETA), and a bar on a terminal or a line every 10% otherwise.
import type { ConvertProgress } from '../../volume/index.js';
import { formatBytes } from '../size.js';

function eta(s: number | null): string {
  if (s === null) return '--';
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** One line of progress: percent, bytes, rate, ETA. */
export function progressLine(p: ConvertProgress): string {
  return (
    `${p.percent.toFixed(1).padStart(5)}%  ${formatBytes(p.done)} of ${formatBytes(p.total)}  ` +
    `${formatBytes(p.rate)}/s  ETA ${eta(p.etaSeconds)}`
  );
}

/** A progress bar on a terminal, plain lines (every 10%) otherwise. */
export function progressPrinter(label = 'encrypt'): { update(p: ConvertProgress): void; end(): void } {
  const tty = process.stderr.isTTY;
  let lastDecile = -1;
  let lastDraw = 0;
  return {
    update(p: ConvertProgress): void {
      if (tty) {
        const now = Date.now();
        if (now - lastDraw < 100 && p.done < p.total) return;
        lastDraw = now;
        const width = 30;
        const filled = Math.round((p.percent / 100) * width);
        process.stderr.write(
          `\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${progressLine(p)}\x1b[K`,
        );
      } else {
        const decile = Math.floor(p.percent / 10);
        if (decile !== lastDecile) {
          lastDecile = decile;
          process.stderr.write(`${label}: ${progressLine(p)}\n`);
        }
      }
    },
    end(): void {
      if (tty) process.stderr.write('\n');
    },
  };
}

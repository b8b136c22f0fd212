// A conversion's progress as status shows it: done and total, percent, the rate over the last seconds and the time left at it.
import type { ConvertMode } from '../../luks2/index.js';

/** Progress as status shows it. */
export interface ConvertProgress {
  mode: ConvertMode;
  done: number;
  total: number;
  percent: number;
  /** Bytes per second over the last few seconds. */
  rate: number;
  /** Seconds left at that rate, or null. */
  etaSeconds: number | null;
  paused: boolean;
  state: 'running' | 'paused' | 'finishing' | 'done' | 'failed';
  error?: string;
}

/** Bytes done over the last 5 seconds (at least the last two notes): the rate status shows. */
export class RateWindow {
  readonly #w: Array<{ t: number; done: number }> = [];

  /** Notes `done` bytes at time `t` (ms); drops notes older than 5 s, keeping two. */
  add(t: number, done: number): void {
    this.#w.push({ t, done });
    while (this.#w.length > 2 && t - (this.#w[0]?.t ?? t) > 5000) this.#w.shift();
  }

  /** Bytes per second between the oldest and newest note, or 0. */
  rate(): number {
    const first = this.#w[0];
    const last = this.#w[this.#w.length - 1];
    return first && last && last.t > first.t
      ? Math.round(((last.done - first.done) * 1000) / (last.t - first.t))
      : 0;
  }
}

/** The progress record of a converter in state `state` (shown as 'paused' while paused and running). */
export function progressOf(o: {
  mode: ConvertMode;
  total: number;
  done: number;
  rate: number;
  paused: boolean;
  state: ConvertProgress['state'];
  error: string | undefined;
}): ConvertProgress {
  const { total, done, rate } = o;
  const p: ConvertProgress = {
    mode: o.mode,
    done,
    total,
    percent: total === 0 ? 100 : Math.floor((done * 1000) / total) / 10,
    rate,
    etaSeconds: rate > 0 ? Math.ceil((total - done) / rate) : null,
    paused: o.paused,
    state: o.paused && o.state === 'running' ? 'paused' : o.state,
  };
  if (o.error !== undefined) p.error = o.error;
  return p;
}

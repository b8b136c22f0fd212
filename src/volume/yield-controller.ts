// How an online conversion yields to foreground I/O: a pure controller (no timers) that turns samples of the volume's foreground counters into the next batch size and pause.
//
// The policy ("duty cycle under a foreground budget"):
// - The converter alternates a batch (busy window) and a pause (quiet window). Before each batch it
//   calls beginBatch() and after it endBatch(), each with a sample of Volume.foreground() and the time.
// - Quiet windows that saw foreground requests complete give the baseline: the foreground's mean
//   request latency and its completion rate while the converter does nothing (EWMA over windows).
//   Nothing is measured "idle": a baseline only exists for the load that is actually there.
// - A busy window that saw foreground work gives the impact of converting on it, in [0, 1]: the larger
//   of the latency slowdown (1 - base latency / latency) and the throughput loss (1 - rate / base rate);
//   1 when requests were in flight and none completed (stalled behind the batch).
// - The duty cycle d (share of wall time spent converting) is then budget / impact (the foreground
//   loses about d * impact = budget of its throughput on average; budget 0.10 under the 15% bar),
//   never below minDuty: the conversion always progresses (at least minDuty of wall time, and at least
//   one minBatch per maxPauseMs + one batch). Decreases apply at once; increases at most double d per
//   window (multiplicative increase), so a noisy window costs little and the converter recovers
//   within a few windows.
// - Batch size: halved (down to minBatch) when the impact is over budget, so each stall is short;
//   doubled (up to maxBatch) when it is within budget or the foreground is idle.
// - A window without any foreground activity (no completion, nothing in flight) doubles d and the
//   batch: an idle volume converts at full speed (d = 1: no pause at all) after a few windows.
// - Foreground active but no baseline yet: d is capped at 1/2 so the next pause can measure one.
// - The pause after a batch is batchMs * (1 - d) / d, at most maxPauseMs.
// - Requests the batch held up complete just after it: the converter calls settled() settleMs into
//   the pause, and the quiet window (baseline) starts there: their latency never inflates the
//   baseline (the busy window already counted them as slow or missing).
//   The settle is at most half the pause.
// - Samples are counters: a window whose deltas are negative or not finite (counter wrap, restart,
//   no sample yet) carries no information; the controller keeps its state and re-syncs on it. Every
//   output is a finite, non-negative number.

/** The volume's foreground counters, as Volume.foreground() returns them. */
export interface ForegroundSample {
  /** Requests in flight now. */
  inFlight: number;
  /** Requests completed so far (a counter). */
  completed: number;
  /** Summed latency of the completed requests, in ns (a counter). */
  busyNs: number;
}

export interface YieldPolicy {
  /** Largest batch (the plan's batch), bytes. */
  maxBatch: number;
  /** Smallest batch under load, bytes (rounded to align; at most maxBatch). */
  minBatch: number;
  /** Batches are whole multiples of this (the sector size). */
  align: number;
  /** Share of the foreground's throughput or latency the conversion may cost on average. */
  budget: number;
  /** Least share of wall time spent converting, whatever the load. */
  minDuty: number;
  /** Longest pause between two batches, ms. */
  maxPauseMs: number;
  /** How long into a pause the requests a batch held up count as the batch's (see settled()), ms. */
  settleMs: number;
}

export const DEFAULT_YIELD_POLICY: Omit<YieldPolicy, 'maxBatch' | 'align'> = {
  minBatch: 1024 * 1024,
  budget: 0.1,
  minDuty: 0.05,
  maxPauseMs: 2000,
  settleMs: 50,
};

/** Completions a quiet window needs before it counts towards the baseline. */
const MIN_BASELINE_COMPLETIONS = 2;
/** Weight of a new quiet window in the baseline. */
const BASELINE_WEIGHT = 0.3;

interface Stamp {
  fg: ForegroundSample;
  now: number;
}

interface Window {
  ms: number;
  completed: number;
  busyNs: number;
  /** Any foreground request completed or in flight at either end. */
  active: boolean;
  /** In flight at either end. */
  inFlight: boolean;
}

function finite(n: number): boolean {
  return typeof n === 'number' && Number.isFinite(n);
}

/** The deltas between two stamps, or null when they carry no information (wrap, NaN, time going back). */
function windowOf(a: Stamp | null, b: Stamp): Window | null {
  if (a === null) return null;
  const ms = b.now - a.now;
  const completed = b.fg.completed - a.fg.completed;
  const busyNs = b.fg.busyNs - a.fg.busyNs;
  if (![ms, completed, busyNs, a.fg.inFlight, b.fg.inFlight].every(finite)) return null;
  if (ms <= 0 || completed < 0 || busyNs < 0) return null;
  const inFlight = a.fg.inFlight > 0 || b.fg.inFlight > 0;
  return { ms, completed, busyNs, inFlight, active: completed > 0 || inFlight };
}

export class YieldController {
  readonly policy: YieldPolicy;
  #duty = 1;
  #batch: number;
  /** Baseline from quiet windows: mean latency (ns) and completions per ms. */
  #base: { latNs: number; rate: number } | null = null;
  #lastEnd: Stamp | null = null;
  #begin: Stamp | null = null;
  #lastImpact: number | null = null;
  /** The pause endBatch gave after a batch with foreground activity (for settled()). */
  #ended: { pause: number } | null = null;

  constructor(policy: Partial<YieldPolicy> & Pick<YieldPolicy, 'maxBatch' | 'align'>) {
    const p = { ...DEFAULT_YIELD_POLICY, ...policy };
    const align = Math.max(1, Math.floor(p.align));
    const maxBatch = Math.max(align, Math.floor(p.maxBatch / align) * align);
    const minBatch = Math.min(maxBatch, Math.max(align, Math.floor(p.minBatch / align) * align));
    this.policy = {
      maxBatch,
      minBatch,
      align,
      budget: Math.min(1, Math.max(0.001, p.budget)),
      minDuty: Math.min(1, Math.max(0.001, p.minDuty)),
      maxPauseMs: Math.max(0, p.maxPauseMs),
      settleMs: Math.max(0, p.settleMs),
    };
    this.#batch = maxBatch;
  }

  /** Share of wall time the converter may spend converting now, in [minDuty, 1]. */
  get duty(): number {
    return this.#duty;
  }

  /** The impact the last busy window measured, or null (none measured yet, or the foreground idle). */
  get lastImpact(): number | null {
    return this.#lastImpact;
  }

  /** The baseline latency (ns) and rate (completions per ms) measured in quiet windows, or null. */
  get baseline(): { latNs: number; rate: number } | null {
    return this.#base === null ? null : { ...this.#base };
  }

  /**
   * Called right before a batch (after the pause): learns from the quiet window since the last batch
   * and returns how many bytes the batch may convert (a multiple of align, in [minBatch, maxBatch]).
   */
  beginBatch(fg: ForegroundSample, now: number): number {
    const stamp = { fg: { ...fg }, now };
    const w = windowOf(this.#lastEnd, stamp);
    if (w !== null) {
      if (!w.active) this.#grow();
      else if (w.completed >= MIN_BASELINE_COMPLETIONS) {
        const latNs = w.busyNs / w.completed;
        const rate = w.completed / w.ms;
        const b = this.#base;
        this.#base =
          b === null
            ? { latNs, rate }
            : {
                latNs: b.latNs + BASELINE_WEIGHT * (latNs - b.latNs),
                rate: b.rate + BASELINE_WEIGHT * (rate - b.rate),
              };
      }
    }
    this.#begin = stamp;
    return this.#batch;
  }

  /** Called right after a batch: learns from the busy window and returns the pause (ms) before the next. */
  endBatch(fg: ForegroundSample, now: number): number {
    const stamp = { fg: { ...fg }, now };
    const begin = this.#begin;
    const w = windowOf(begin, stamp);
    this.#begin = null;
    this.#lastEnd = stamp;
    this.#ended = null;
    if (w === null) return this.#pause(0);
    if (!w.active) {
      this.#lastImpact = null;
      this.#grow();
      return this.#pause(w.ms);
    }
    this.#learn(w);
    const pause = this.#pause(w.ms);
    this.#ended = { pause };
    return pause;
  }

  /**
   * Optional, settleMs into the pause (at most half of it, so a quiet window remains; see policy): requests the batch held up complete just after
   * it, with the batch in their latency; the baseline must not see them (the batch window already
   * counted them as missing). The quiet window starts here instead. Returns the rest of the pause (ms).
   */
  settled(fg: ForegroundSample, now: number): number {
    const e = this.#ended;
    this.#ended = null;
    const since = this.#lastEnd === null ? NaN : now - this.#lastEnd.now;
    if (e === null || !(since >= 0) || ![fg.completed, fg.busyNs, fg.inFlight].every(finite)) return 0;
    this.#lastEnd = { fg: { ...fg }, now };
    return Math.max(0, e.pause - since);
  }

  /** Adapts duty and batch size to the impact of a busy window with foreground activity. */
  #learn(w: Window): void {
    const impact = this.#impact(w);
    this.#lastImpact = impact;
    if (impact === null) {
      // foreground there, nothing to compare with yet: leave a quiet window as long as the batch
      this.#duty = Math.min(this.#duty, 0.5);
    } else {
      const { budget, minDuty, minBatch, maxBatch, align } = this.policy;
      const target = impact <= budget ? 1 : budget / impact;
      this.#duty = Math.max(minDuty, Math.min(target, 2 * this.#duty, 1));
      const next = impact > budget ? this.#batch / 2 : this.#batch * 2;
      this.#batch = Math.min(maxBatch, Math.max(minBatch, Math.floor(next / align) * align));
    }
  }

  /** Impact of the busy window on the foreground, in [0, 1]; null without a baseline to compare with. */
  #impact(w: Window): number | null {
    if (w.completed === 0) return w.inFlight ? 1 : 0;
    const b = this.#base;
    if (b === null) return null;
    const latNs = w.busyNs / w.completed;
    const rate = w.completed / w.ms;
    const slower = latNs > b.latNs && latNs > 0 ? 1 - b.latNs / latNs : 0;
    const fewer = b.rate > 0 && rate < b.rate ? 1 - rate / b.rate : 0;
    const impact = Math.max(slower, fewer);
    return finite(impact) ? Math.min(1, Math.max(0, impact)) : 1;
  }

  #grow(): void {
    const { maxBatch, align } = this.policy;
    this.#duty = Math.min(1, 2 * this.#duty);
    this.#batch = Math.min(maxBatch, Math.floor((2 * this.#batch) / align) * align);
  }

  #pause(batchMs: number): number {
    const d = this.#duty;
    if (d >= 1 || !(batchMs > 0)) return 0;
    const ms = (batchMs * (1 - d)) / d;
    return finite(ms) ? Math.min(this.policy.maxPauseMs, Math.max(0, ms)) : 0;
  }
}

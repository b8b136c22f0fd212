import { describe, expect, it } from 'vitest';
import { YieldController, type ForegroundSample } from './yield-controller.js';

const MiB = 1024 * 1024;

/**
 * A simulated foreground: a closed-loop load whose requests take `quietNs` each while the converter
 * pauses and `busyNs` each while a batch runs (0 requests per ms: no foreground at all).
 */
class Load {
  fg: ForegroundSample = { inFlight: 0, completed: 0, busyNs: 0 };
  now = 0;
  constructor(
    public perMsQuiet: number,
    public latQuietNs: number,
    public perMsBusy = perMsQuiet,
    public latBusyNs = latQuietNs,
  ) {}

  advance(ms: number, busy: boolean): void {
    const n = Math.round(ms * (busy ? this.perMsBusy : this.perMsQuiet));
    this.fg = {
      inFlight: n > 0 || (busy ? this.perMsBusy : this.perMsQuiet) > 0 ? 4 : 0,
      completed: this.fg.completed + n,
      busyNs: this.fg.busyNs + n * (busy ? this.latBusyNs : this.latQuietNs),
    };
    this.now += ms;
  }
}

/** Runs `cycles` batch + pause cycles; a batch takes `msPerMiB` per MiB. Returns what the controller chose. */
function drive(c: YieldController, load: Load, cycles: number, msPerMiB = 10) {
  const out: Array<{ bytes: number; pause: number; duty: number }> = [];
  for (let i = 0; i < cycles; i++) {
    const bytes = c.beginBatch(load.fg, load.now);
    load.advance((bytes / MiB) * msPerMiB, true);
    const pause = c.endBatch(load.fg, load.now);
    load.advance(pause, false);
    out.push({ bytes, pause, duty: c.duty });
  }
  return out;
}

const policy = { maxBatch: 8 * MiB, align: 512 };

describe('YieldController', () => {
  it('idle volume: full batches, no pause, duty 1', () => {
    const c = new YieldController(policy);
    const steps = drive(c, new Load(0, 0), 20);
    for (const s of steps) expect(s).toEqual({ bytes: 8 * MiB, pause: 0, duty: 1 });
  });

  it('foreground latency rising during batches: backs off to a short duty and small batches', () => {
    const c = new YieldController(policy);
    // 10 requests per ms at 0.1 ms each while quiet; 4x slower (and 4x fewer) while a batch runs
    const load = new Load(10, 100_000, 2.5, 400_000);
    const steps = drive(c, load, 30);
    const last = steps[steps.length - 1];
    expect(last).toBeDefined();
    if (!last) return;
    // impact 0.75, budget 0.1: duty ~ 0.13, batches at the minimum, pauses ~ 6.5x the batch
    expect(c.lastImpact).toBeCloseTo(0.75, 2);
    expect(last.duty).toBeCloseTo(0.1 / 0.75, 2);
    expect(last.bytes).toBe(MiB);
    expect(last.pause).toBeGreaterThan(5 * 10);
    // the foreground's expected loss stays near the budget: duty * impact
    expect(last.duty * 0.75).toBeLessThanOrEqual(0.1 + 1e-9);
  });

  it('a batch that does not hurt the foreground runs at full speed with the foreground there', () => {
    const c = new YieldController(policy);
    const steps = drive(c, new Load(10, 100_000, 10, 105_000), 30);
    const last = steps[steps.length - 1];
    expect(last?.duty).toBe(1);
    expect(last?.bytes).toBe(8 * MiB);
    expect(last?.pause).toBe(0);
  });

  it('foreground gone: recovers to full speed within a few batches', () => {
    const c = new YieldController(policy);
    const load = new Load(10, 100_000, 1, 1_000_000);
    drive(c, load, 20);
    expect(c.duty).toBeLessThan(0.2);
    load.perMsQuiet = 0;
    load.perMsBusy = 0;
    const steps = drive(c, load, 6);
    expect(steps[steps.length - 1]).toEqual({ bytes: 8 * MiB, pause: 0, duty: 1 });
  });

  it('minimum progress: a foreground stalled by every batch still gets minDuty and minBatch', () => {
    // a budget so small that budget / impact would go under the floor
    const c = new YieldController({ ...policy, budget: 0.01, minDuty: 0.05, maxPauseMs: 2000 });
    // requests in flight, none completes while a batch runs
    const load = new Load(10, 100_000, 0, 0);
    const steps = drive(c, load, 50);
    let busyMs = 0;
    let allMs = 0;
    for (const s of steps.slice(10)) {
      expect(s.bytes).toBeGreaterThanOrEqual(MiB);
      expect(s.pause).toBeLessThanOrEqual(2000);
      busyMs += (s.bytes / MiB) * 10;
      allMs += (s.bytes / MiB) * 10 + s.pause;
    }
    expect(c.duty).toBe(0.05);
    expect(busyMs / allMs).toBeGreaterThanOrEqual(0.05 - 1e-9);
  });

  it('requests held up by a batch and completing just after it count against the batch (settled)', () => {
    // qd 16, 0.1 ms per request while quiet; a batch (10 ms per MiB) stalls all 16, which complete
    // within the first ms after it with the whole batch time as their latency
    const run = (settle: boolean): YieldController => {
      const c = new YieldController({ ...policy, settleMs: 5 });
      let fg: ForegroundSample = { inFlight: 16, completed: 0, busyNs: 0 };
      let now = 0;
      const quiet = (ms: number): void => {
        const n = Math.round(ms * 160);
        fg = { inFlight: 16, completed: fg.completed + n, busyNs: fg.busyNs + n * 100_000 };
        now += ms;
      };
      for (let i = 0; i < 30; i++) {
        const bytes = c.beginBatch(fg, now);
        const ms = (bytes / MiB) * 10;
        now += ms;
        let pause = c.endBatch(fg, now);
        // the held-up requests complete right after the batch
        fg = { inFlight: 16, completed: fg.completed + 16, busyNs: fg.busyNs + 16 * ms * 1e6 };
        now += 1;
        if (settle && pause > 0) {
          quiet(4);
          pause = c.settled(fg, now);
        }
        quiet(pause);
      }
      return c;
    };
    const good = run(true);
    expect(good.baseline?.latNs).toBeCloseTo(100_000, -3);
    expect(good.lastImpact).toBe(1);
    expect(good.duty).toBeCloseTo(0.1, 5);
    // without settled() the held-up requests inflate the baseline latency
    expect(run(false).baseline?.latNs ?? 0).toBeGreaterThan(105_000);
  });

  it('the pause is capped at maxPauseMs even for long batches', () => {
    const c = new YieldController({ ...policy, maxPauseMs: 500 });
    const steps = drive(c, new Load(10, 100_000, 0, 0), 20, 1000);
    for (const s of steps) expect(s.pause).toBeLessThanOrEqual(500);
    expect(steps.at(-1)?.bytes).toBe(MiB);
  });

  it('no NaN or negative output on zero samples, counter wrap, NaN counters or time going back', () => {
    const c = new YieldController(policy);
    const check = (n: number): void => {
      expect(Number.isFinite(n)).toBe(true);
      expect(n).toBeGreaterThanOrEqual(0);
    };
    const zero = { inFlight: 0, completed: 0, busyNs: 0 };
    // the first calls have nothing to compare with; zero-length windows
    check(c.beginBatch(zero, 0));
    check(c.endBatch(zero, 0));
    check(c.beginBatch(zero, 0));
    check(c.endBatch(zero, 0));
    // get it backed off, then wrap the counters
    const load = new Load(10, 100_000, 1, 1_000_000);
    drive(c, load, 10);
    const duty = c.duty;
    check(c.beginBatch({ inFlight: 3, completed: 5, busyNs: 10 }, load.now + 1));
    check(c.endBatch({ inFlight: 3, completed: 1, busyNs: 2 }, load.now + 10));
    expect(c.duty).toBe(duty);
    check(c.beginBatch({ inFlight: NaN, completed: NaN, busyNs: Infinity }, load.now + 20));
    check(c.endBatch({ inFlight: 1, completed: Number.NaN, busyNs: 0 }, load.now + 30));
    check(c.beginBatch({ inFlight: 1, completed: 10, busyNs: 10 }, load.now + 40));
    check(c.endBatch({ inFlight: 1, completed: 20, busyNs: 20 }, load.now - 5000));
    // zero-latency requests (a baseline of 0 ns) do not divide by zero
    const z = new YieldController(policy);
    const zl = new Load(10, 0, 10, 0);
    for (const s of drive(z, zl, 10)) {
      check(s.bytes);
      check(s.pause);
      check(s.duty);
    }
    expect(z.duty).toBe(1);
    for (const s of drive(c, new Load(0, 0), 3)) {
      check(s.bytes);
      check(s.pause);
    }
  });

  it('batches are whole sectors and within [minBatch, maxBatch] for odd policies', () => {
    const c = new YieldController({ maxBatch: 3 * MiB + 1000, align: 4096, minBatch: 1000 });
    expect(c.policy.maxBatch % 4096).toBe(0);
    expect(c.policy.minBatch).toBe(4096);
    for (const s of drive(c, new Load(10, 100_000, 0, 0), 30)) {
      expect(s.bytes % 4096).toBe(0);
      expect(s.bytes).toBeGreaterThanOrEqual(4096);
      expect(s.bytes).toBeLessThanOrEqual(c.policy.maxBatch);
    }
  });
});

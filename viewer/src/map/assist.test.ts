import { describe, expect, it } from 'vitest';

import type { AnnotationFeature } from '../api';
import { ApiError } from '../api';
import type { Timers } from './assist';
import { boxBetween, describeError, describeProposal, isAskable, LatestRequest, segmentBody } from './assist';

describe('the segment request body', () => {
  const prompt = {
    points: [
      { x: 310.123, y: 290.456, positive: true },
      { x: 12, y: 8, positive: false },
    ],
    box: null,
  };

  it('sends points with 1/0 flags and the label on a 2D image, with the displayed bands', () => {
    expect(segmentBody(prompt, { bands: [4, 3, 2] }, 'blob')).toEqual({
      points: [
        [310.12, 290.46, 1],
        [12, 8, 0],
      ],
      bands: [4, 3, 2],
      label: 'blob',
    });
    expect(segmentBody(prompt, {})).toEqual({ points: [[310.12, 290.46, 1], [12, 8, 0]] });
  });

  it('sends a box', () => {
    const body = segmentBody({ points: [], box: [1.004, 2, 30, 40.5] }, {}, 'x');
    expect(body).toEqual({ points: [], box: [1, 2, 30, 40.5], label: 'x' });
  });

  it('sends the slice, plane and window of a volume, not bands', () => {
    const volume = { slice: 7, plane: 'coronal' as const, preset: null, window: 400.04, level: 40 };
    expect(segmentBody(prompt, { volume, bands: [1] })).toEqual({
      points: [
        [310.12, 290.46, 1],
        [12, 8, 0],
      ],
      slice: 7,
      plane: 'coronal',
      window: 400.04,
      level: 40,
    });
    const preset = segmentBody(prompt, { volume: { slice: 0, plane: 'axial', preset: 'bone', window: 2000, level: 300 } });
    expect(preset).toMatchObject({ slice: 0, plane: 'axial', preset: 'bone' });
    expect(preset.window).toBeUndefined();
  });

  it('needs a positive point or a box', () => {
    expect(isAskable({ points: [{ x: 1, y: 1, positive: false }], box: null })).toBe(false);
    expect(isAskable({ points: [{ x: 1, y: 1, positive: true }], box: null })).toBe(true);
    expect(isAskable({ points: [], box: [0, 0, 2, 2] })).toBe(true);
  });

  it('orders a dragged box and refuses one without area', () => {
    expect(boxBetween({ x: 30, y: 5 }, { x: 10, y: 50 })).toEqual([10, 5, 30, 50]);
    expect(boxBetween({ x: 10, y: 5 }, { x: 10.5, y: 50 })).toBeNull();
  });
});

describe('what is shown', () => {
  it('shows the score and method of a proposal', () => {
    const f: AnnotationFeature = {
      type: 'Feature',
      geometry: { type: 'Polygon', coordinates: [] },
      properties: { label: 'a', score: 0.8312, method: 'random_walker' },
    };
    expect(describeProposal(f)).toContain('score 0.83 · random walker');
  });

  it("shows the server's message for nothing found and a bad prompt", () => {
    expect(describeError(new ApiError(422, 'nothing_found', 'no contrast'))).toBe('Nothing found here: no contrast');
    expect(describeError(new ApiError(400, 'bad_request', 'point outside'))).toBe('Bad prompt: point outside');
  });
});

class FakeTimers implements Timers {
  private next = 1;
  readonly waiting = new Map<number, () => void>();
  set(run: () => void): unknown {
    const id = this.next++;
    this.waiting.set(id, run);
    return id;
  }
  clear(handle: unknown): void {
    this.waiting.delete(handle as number);
  }
  fire(): void {
    const runs = [...this.waiting.values()];
    this.waiting.clear();
    for (const run of runs) run();
  }
}

const flush = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 0));

describe('LatestRequest', () => {
  it('debounces: only the last call within the delay runs', async () => {
    const timers = new FakeTimers();
    const latest = new LatestRequest<number>(250, timers);
    const ran: number[] = [];
    const got: number[] = [];
    for (const n of [1, 2, 3]) latest.schedule(async () => (ran.push(n), n), (v) => got.push(v), () => undefined);
    expect(timers.waiting.size).toBe(1);
    timers.fire();
    await flush();
    expect(ran).toEqual([3]);
    expect(got).toEqual([3]);
  });

  it('aborts the request in flight and never delivers it', async () => {
    const timers = new FakeTimers();
    const latest = new LatestRequest<string>(250, timers);
    const signals: AbortSignal[] = [];
    let release: (v: string) => void = () => undefined;
    const got: string[] = [];
    latest.schedule(
      (signal) => {
        signals.push(signal);
        return new Promise<string>((resolve) => (release = resolve));
      },
      (v) => got.push(v),
      () => got.push('error'),
    );
    timers.fire();
    latest.schedule(async () => 'second', (v) => got.push(v), () => got.push('error'));
    expect(signals[0]?.aborted).toBe(true);
    release('first');
    timers.fire();
    await flush();
    expect(got).toEqual(['second']);
  });

  it('delivers errors of the latest call, and nothing after cancel', async () => {
    const timers = new FakeTimers();
    const latest = new LatestRequest<string>(250, timers);
    const errors: unknown[] = [];
    latest.schedule(() => Promise.reject(new Error('boom')), () => undefined, (e) => errors.push(e));
    timers.fire();
    await flush();
    expect(errors).toHaveLength(1);
    latest.schedule(() => Promise.reject(new Error('late')), () => undefined, (e) => errors.push(e));
    latest.cancel();
    timers.fire();
    await flush();
    expect(errors).toHaveLength(1);
  });
});

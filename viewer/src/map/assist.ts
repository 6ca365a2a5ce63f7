/**
 * Pure logic of the Assist tool (./assistTool): the prompt (positive and negative points, an
 * optional box, in image pixels), the body of `POST /images/{id}/segment` built from it and the
 * view (slice, plane and window of a volume; displayed bands of a 2D image), the text shown for a
 * proposal or an error, and a debounced "latest request only" runner.
 */
import type { AnnotationFeature, PlaneName, SegmentBody } from '../api';
import { ApiError } from '../api';

export interface AssistPoint {
  x: number;
  y: number;
  positive: boolean;
}

export interface AssistPrompt {
  points: AssistPoint[];
  /** `[x0, y0, x1, y1]` with x0 < x1, y0 < y1 (pixels). */
  box: [number, number, number, number] | null;
}

/** What is shown: a volume's slice, plane and window, or a 2D image's displayed bands. */
export interface AssistView {
  volume?: { slice: number; plane: PlaneName; preset?: string | null; window?: number; level?: number } | null;
  bands?: readonly number[] | undefined;
}

export function emptyPrompt(): AssistPrompt {
  return { points: [], box: null };
}

/** A prompt the server can answer: a positive point or a box (negatives alone find nothing). */
export function isAskable(prompt: AssistPrompt): boolean {
  return prompt.box !== null || prompt.points.some((p) => p.positive);
}

/** The box dragged between two pixel positions (any order), or null if it has no area. */
export function boxBetween(a: { x: number; y: number }, b: { x: number; y: number }): [number, number, number, number] | null {
  const x0 = Math.min(a.x, b.x);
  const x1 = Math.max(a.x, b.x);
  const y0 = Math.min(a.y, b.y);
  const y1 = Math.max(a.y, b.y);
  return x1 - x0 >= 1 && y1 - y0 >= 1 ? [x0, y0, x1, y1] : null;
}

const round2 = (v: number): number => Math.round(v * 100) / 100;

/** The segment request for a prompt on the view shown (pixel coordinates, rounded to 0.01 px). */
export function segmentBody(prompt: AssistPrompt, view: AssistView, label?: string): SegmentBody {
  const body: SegmentBody = { points: prompt.points.map((p) => [round2(p.x), round2(p.y), p.positive ? 1 : 0]) };
  if (prompt.box) body.box = prompt.box.map(round2) as [number, number, number, number];
  const volume = view.volume;
  if (volume) {
    body.slice = volume.slice;
    body.plane = volume.plane;
    if (volume.window !== undefined && volume.level !== undefined && !volume.preset) {
      body.window = round2(volume.window);
      body.level = round2(volume.level);
    } else if (volume.preset) {
      body.preset = volume.preset;
    }
  } else if (view.bands && view.bands.length > 0) {
    body.bands = [...view.bands];
  }
  if (label) body.label = label;
  return body;
}

/** The line shown for a proposal: its score and method. */
export function describeProposal(feature: AnnotationFeature): string {
  const p = feature.properties;
  const score = typeof p.score === 'number' ? p.score.toFixed(2) : '?';
  const method = typeof p.method === 'string' ? p.method.replace('_', ' ') : 'unknown';
  const parts = feature.geometry?.type === 'MultiPolygon' ? ` · ${(feature.geometry.coordinates as unknown[]).length} parts` : '';
  return `Proposal: score ${score} · ${method}${parts} — Enter accepts, Esc clears`;
}

/** The line shown when a request fails: the server's message for a bad prompt or nothing found. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.status === 422) return `Nothing found here: ${error.message}`;
    if (error.status === 400) return `Bad prompt: ${error.message}`;
    return `The proposal failed (${error.status}): ${error.message}`;
  }
  return `The proposal failed: ${error instanceof Error ? error.message : String(error)}`;
}

export interface Timers {
  set(run: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: Timers = {
  set: (run, ms) => setTimeout(run, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Runs the latest of a series of requests, `delayMs` after the last call: a call before the
 * delay replaces the waiting one, a call after it aborts the one in flight, and only the latest
 * call's outcome is delivered (an aborted or superseded one never is).
 */
export class LatestRequest<T> {
  private timer: unknown = null;
  private controller: AbortController | null = null;
  private generation = 0;

  constructor(
    private readonly delayMs: number,
    private readonly timers: Timers = realTimers,
  ) {}

  schedule(run: (signal: AbortSignal) => Promise<T>, done: (value: T) => void, failed: (error: unknown) => void): void {
    this.cancel();
    const generation = this.generation;
    this.timer = this.timers.set(() => {
      this.timer = null;
      const controller = new AbortController();
      this.controller = controller;
      run(controller.signal).then(
        (value) => {
          if (generation === this.generation && !controller.signal.aborted) done(value);
        },
        (error: unknown) => {
          if (generation === this.generation && !controller.signal.aborted) failed(error);
        },
      );
    }, this.delayMs);
  }

  /** Drop the waiting call and abort the one in flight. */
  cancel(): void {
    this.generation++;
    if (this.timer !== null) this.timers.clear(this.timer);
    this.timer = null;
    this.controller?.abort();
    this.controller = null;
  }
}

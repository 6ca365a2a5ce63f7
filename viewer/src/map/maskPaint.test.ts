import { describe, expect, it } from 'vitest';

import type { Point, PixelRect } from './maskPaint';
import { decodeMask, encodeMask, PixelMask, rebaseMask, strokeMask, subtract, sweepDisc, union } from './maskPaint';

const IMAGE: PixelRect = { c0: 0, r0: 0, c1: 600, r1: 400 };

/** Deterministic pseudo-random numbers in [0, 1) (mulberry32). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function fromRows(rows: number[][], col = 0, row = 0): PixelMask {
  return new PixelMask(col, row, rows[0]?.length ?? 0, rows.length, Uint8Array.from(rows.flat()));
}

function setPixels(mask: PixelMask | null): Set<string> {
  const out = new Set<string>();
  if (!mask) return out;
  for (let y = 0; y < mask.height; y++) {
    for (let x = 0; x < mask.width; x++) if (mask.data[y * mask.width + x]) out.add(`${mask.col + x},${mask.row + y}`);
  }
  return out;
}

/** Brute force: pixel centres within `radius` of the polyline, over the whole image. */
function expectedStroke(points: Point[], radius: number, bounds: PixelRect): Set<string> {
  const out = new Set<string>();
  const segments = points.length === 1 ? [[points[0], points[0]]] : points.slice(1).map((p, i) => [points[i], p]);
  for (let r = bounds.r0; r < bounds.r1; r++) {
    for (let c = bounds.c0; c < bounds.c1; c++) {
      const px = c + 0.5;
      const py = r + 0.5;
      for (const [a, b] of segments as [Point, Point][]) {
        const dx = b.x - a.x;
        const dy = b.y - a.y;
        const len = dx * dx + dy * dy;
        const t = len === 0 ? 0 : Math.max(0, Math.min(1, ((px - a.x) * dx + (py - a.y) * dy) / len));
        if ((px - a.x - t * dx) ** 2 + (py - a.y - t * dy) ** 2 <= radius * radius) {
          out.add(`${c},${r}`);
          break;
        }
      }
    }
  }
  return out;
}

describe('run-length encoding', () => {
  // Produced once by annot.model.Mask.from_array(rows, col, row).to_json() in Python.
  it('equals the server encoding of a known array', () => {
    const rows = [
      [0, 0, 0, 0, 0, 0, 0],
      [0, 0, 1, 1, 1, 0, 0],
      [0, 1, 1, 1, 1, 1, 0],
      [0, 0, 1, 1, 1, 0, 0],
      [0, 0, 0, 0, 0, 0, 1],
    ];
    expect(encodeMask(fromRows(rows, 10, 20))).toEqual({ origin: [10, 20], size: [7, 5], counts: [9, 3, 3, 5, 3, 3, 8, 1] });
    // A first pixel set starts with an empty run of 0s; an empty mask is one run of 0s.
    expect(encodeMask(fromRows([[1, 1, 0], [0, 1, 1]]))).toEqual({ origin: [0, 0], size: [3, 2], counts: [0, 2, 2, 2] });
    expect(encodeMask(fromRows([[0, 0], [0, 0]]))).toEqual({ origin: [0, 0], size: [2, 2], counts: [4] });
  });

  it('round-trips random masks, and decoding checks the counts', () => {
    const rand = random(7);
    for (let k = 0; k < 200; k++) {
      const width = 1 + Math.floor(rand() * 20);
      const height = 1 + Math.floor(rand() * 20);
      const density = rand();
      const mask = new PixelMask(Math.floor(rand() * 100), Math.floor(rand() * 100), width, height);
      for (let i = 0; i < mask.data.length; i++) mask.data[i] = rand() < density ? 1 : 0;
      const json = encodeMask(mask);
      expect(json.counts.reduce((a, b) => a + b, 0)).toBe(width * height);
      expect(json.counts.slice(1).every((c) => c > 0)).toBe(true);
      const back = decodeMask(json);
      expect([back.col, back.row, back.width, back.height]).toEqual([mask.col, mask.row, width, height]);
      expect(Array.from(back.data)).toEqual(Array.from(mask.data));
    }
    expect(() => decodeMask({ origin: [0, 0], size: [2, 2], counts: [1, 2] })).toThrow(/add up to 3/);
    expect(() => decodeMask({ origin: [0, 0], size: [2, 2], counts: [3, 2] })).toThrow(/overflow/);
  });
});

describe('disc stamping', () => {
  it('a click stamps the pixels whose centre is within the radius', () => {
    const mask = strokeMask([{ x: 100, y: 50 }], 2, IMAGE);
    // Centres at 98.5..101.5 in both axes; the corners (distance 2.12) are out.
    expect(setPixels(mask)).toEqual(expectedStroke([{ x: 100, y: 50 }], 2, IMAGE));
    expect(mask?.area).toBe(12);
    expect(mask?.get(98, 49)).toBe(true);
    expect(mask?.get(98, 48)).toBe(false);
    expect([mask?.col, mask?.row, mask?.width, mask?.height]).toEqual([98, 48, 4, 4]);
  });

  it('a fast drag (two samples far apart) leaves no gap', () => {
    const a = { x: 10.3, y: 10.7 };
    const b = { x: 190.2, y: 120.1 };
    const mask = strokeMask([a, b], 1.5, IMAGE);
    expect(setPixels(mask)).toEqual(expectedStroke([a, b], 1.5, IMAGE));
    // Every pixel on the line between the samples is painted.
    for (let t = 0; t <= 1; t += 0.001) {
      expect(mask?.get(Math.floor(a.x + t * (b.x - a.x)), Math.floor(a.y + t * (b.y - a.y)))).toBe(true);
    }
  });

  it('random strokes equal the brute-force sweep, clipped to the image', () => {
    const rand = random(42);
    const small: PixelRect = { c0: 0, r0: 0, c1: 60, r1: 40 };
    for (let k = 0; k < 40; k++) {
      const points = Array.from({ length: 1 + Math.floor(rand() * 6) }, () => ({ x: rand() * 80 - 10, y: rand() * 60 - 10 }));
      const radius = 0.3 + rand() * 6;
      const mask = strokeMask(points, radius, small);
      const expected = expectedStroke(points, radius, small);
      expect(setPixels(mask)).toEqual(expected);
      if (mask) {
        expect(mask.col >= 0 && mask.row >= 0 && mask.col + mask.width <= 60 && mask.row + mask.height <= 40).toBe(true);
      }
    }
  });

  it('sweepDisc grows the mask and reports the rectangle it touched', () => {
    const mask = new PixelMask(50, 50, 1, 1);
    const rect = sweepDisc(mask, { x: 10, y: 10 }, { x: 20, y: 10 }, 1, IMAGE);
    expect(rect).toEqual({ c0: 8, r0: 8, c1: 22, r1: 12 });
    // Grown with slack, clipped to the image, still holding the first pixel's place.
    expect(mask.rect).toEqual({ c0: 0, r0: 0, c1: 54, r1: 51 });
    expect(mask.get(15, 9)).toBe(true);
    expect(mask.area).toBe(setPixels(strokeMask([{ x: 10, y: 10 }, { x: 20, y: 10 }], 1, IMAGE)).size);
    expect(sweepDisc(mask, { x: -50, y: -50 }, { x: -40, y: -50 }, 2, IMAGE)).toBeNull();
  });
});

describe('merging and erasing', () => {
  it('union, subtract and trim behave as sets', () => {
    const rand = random(3);
    for (let k = 0; k < 50; k++) {
      const a = strokeMask([{ x: rand() * 40, y: rand() * 40 }, { x: rand() * 40, y: rand() * 40 }], 1 + rand() * 4, IMAGE);
      const b = strokeMask([{ x: rand() * 40, y: rand() * 40 }], 1 + rand() * 6, IMAGE);
      if (!a || !b) throw new Error('strokes inside the image are never empty');
      const sa = setPixels(a);
      const sb = setPixels(b);
      expect(setPixels(union(a, b))).toEqual(new Set([...sa, ...sb]));
      const rest = subtract(a, b).trimmed();
      expect(setPixels(rest)).toEqual(new Set([...sa].filter((p) => !sb.has(p))));
    }
    const only = strokeMask([{ x: 5, y: 5 }], 2, IMAGE);
    if (!only) throw new Error('empty');
    expect(subtract(only, only).trimmed()).toBeNull();
  });
});

describe('replaying a change onto a newer mask', () => {
  const pixels = (...list: [number, number][]): PixelMask => {
    const mask = new PixelMask(0, 0, 10, 10);
    for (const [c, r] of list) mask.data[r * 10 + c] = 1;
    return mask.trimmed() as PixelMask;
  };
  const base = pixels([1, 1], [2, 1], [3, 1]);

  it('adds what mine added and removes what mine removed, keeping their other changes', () => {
    const mine = pixels([1, 1], [2, 1], [5, 5]); // added (5,5), erased (3,1)
    const theirs = pixels([1, 1], [2, 1], [3, 1], [8, 0]); // added (8,0)
    expect(setPixels(rebaseMask(base, mine, theirs))).toEqual(new Set(['1,1', '2,1', '5,5', '8,0']));
  });

  it('a pixel they erased stays erased unless mine added it', () => {
    const theirs = pixels([1, 1]); // erased (2,1) and (3,1)
    expect(setPixels(rebaseMask(base, union(base, pixels([7, 7])), theirs))).toEqual(new Set(['1,1', '7,7']));
    expect(setPixels(rebaseMask(null, pixels([2, 1]), theirs))).toEqual(new Set(['1,1', '2,1']));
  });

  it('a delete replayed keeps only what they added; nothing left is null', () => {
    expect(setPixels(rebaseMask(base, null, pixels([1, 1], [2, 1], [3, 1], [0, 9])))).toEqual(new Set(['0,9']));
    expect(rebaseMask(base, null, pixels([2, 1]))).toBeNull();
    expect(setPixels(rebaseMask(base, base, null))).toEqual(new Set()); // deleted by them, mine unchanged
    expect(setPixels(rebaseMask(base, pixels([1, 1], [2, 1], [3, 1], [4, 4]), null))).toEqual(new Set(['4,4']));
  });

  it('does not change its inputs', () => {
    const theirs = pixels([1, 1], [9, 9]);
    const before = encodeMask(theirs);
    rebaseMask(base, pixels([4, 4]), theirs);
    expect(encodeMask(theirs)).toEqual(before);
  });
});

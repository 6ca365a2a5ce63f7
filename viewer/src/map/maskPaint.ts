/**
 * Brush masks in the browser: bitmaps on the image's pixel grid, painted by sweeping a disc
 * along the pointer's path, merged, erased, and run-length encoded exactly as the server's
 * `annot.model.Mask` (row-major runs of 0s and 1s, starting with a run of 0s that may be empty).
 *
 * Pixel (col, row) covers [col, col+1) × [row, row+1) in pixel coordinates; a stroke paints the
 * pixels whose centre (col+0.5, row+0.5) lies within `radius` of the swept segment. Testing the
 * distance to the segment, not stamping discs at sample points, is what keeps fast drags gap-free.
 */

/** `properties.mask` of a mask annotation. */
export interface MaskJson {
  origin: [number, number];
  size: [number, number];
  counts: number[];
}

export interface Point {
  x: number;
  y: number;
}

/** Inclusive-exclusive pixel rectangle: columns c0..c1-1, rows r0..r1-1. */
export interface PixelRect {
  c0: number;
  r0: number;
  c1: number;
  r1: number;
}

/** A bitmap whose top-left pixel is (col, row); data[y * width + x] is 1 for a set pixel. */
export class PixelMask {
  constructor(
    public col: number,
    public row: number,
    public width: number,
    public height: number,
    public data: Uint8Array = new Uint8Array(width * height),
  ) {}

  get(col: number, row: number): boolean {
    const x = col - this.col;
    const y = row - this.row;
    return x >= 0 && y >= 0 && x < this.width && y < this.height && this.data[y * this.width + x] === 1;
  }

  get area(): number {
    let n = 0;
    for (const v of this.data) n += v;
    return n;
  }

  get rect(): PixelRect {
    return { c0: this.col, r0: this.row, c1: this.col + this.width, r1: this.row + this.height };
  }

  /** Grow (never shrink) to cover `rect`, keeping the pixels set so far. */
  ensure(rect: PixelRect): void {
    const c0 = Math.min(this.col, rect.c0);
    const r0 = Math.min(this.row, rect.r0);
    const c1 = Math.max(this.col + this.width, rect.c1);
    const r1 = Math.max(this.row + this.height, rect.r1);
    if (c0 === this.col && r0 === this.row && c1 === this.col + this.width && r1 === this.row + this.height) return;
    const grown = new PixelMask(c0, r0, c1 - c0, r1 - r0);
    grown.paste(this, (_old, src) => src);
    Object.assign(this, { col: grown.col, row: grown.row, width: grown.width, height: grown.height, data: grown.data });
  }

  /** Combine `other` into this mask pixel by pixel where they overlap (`combine(mine, theirs)`). */
  paste(other: PixelMask, combine: (mine: number, theirs: number) => number): void {
    const c0 = Math.max(this.col, other.col);
    const r0 = Math.max(this.row, other.row);
    const c1 = Math.min(this.col + this.width, other.col + other.width);
    const r1 = Math.min(this.row + this.height, other.row + other.height);
    for (let r = r0; r < r1; r++) {
      const mine = (r - this.row) * this.width - this.col;
      const theirs = (r - other.row) * other.width - other.col;
      for (let c = c0; c < c1; c++) this.data[mine + c] = combine(this.data[mine + c] ?? 0, other.data[theirs + c] ?? 0);
    }
  }

  /** The smallest mask holding the same set pixels, or null if none is set. */
  trimmed(): PixelMask | null {
    let c0 = Infinity;
    let r0 = Infinity;
    let c1 = -Infinity;
    let r1 = -Infinity;
    for (let y = 0; y < this.height; y++) {
      for (let x = 0; x < this.width; x++) {
        if (this.data[y * this.width + x] !== 1) continue;
        c0 = Math.min(c0, x);
        c1 = Math.max(c1, x + 1);
        r0 = Math.min(r0, y);
        r1 = Math.max(r1, y + 1);
      }
    }
    if (c1 < 0) return null;
    const out = new PixelMask(this.col + c0, this.row + r0, c1 - c0, r1 - r0);
    out.paste(this, (_old, src) => src);
    return out;
  }

  clone(): PixelMask {
    return new PixelMask(this.col, this.row, this.width, this.height, this.data.slice());
  }
}

/** `a ∪ b` on a grid covering both. */
export function union(a: PixelMask, b: PixelMask): PixelMask {
  const out = a.clone();
  out.ensure(b.rect);
  out.paste(b, (mine, theirs) => mine | theirs);
  return out;
}

/** `a \ b`: the pixels of `a` not set in `b`, on `a`'s grid (trim it to shrink). */
export function subtract(a: PixelMask, b: PixelMask): PixelMask {
  const out = a.clone();
  out.paste(b, (mine, theirs) => mine & (theirs ^ 1));
  return out;
}

/**
 * Replay the change `base` → `mine` onto `theirs` (a three-way merge, for a save refused
 * because the mask changed meanwhile): `theirs` plus the pixels `mine` added to `base`, minus
 * those it removed. null stands for an empty mask (none yet, or deleted); the answer is
 * trimmed, and null if nothing is left.
 */
export function rebaseMask(base: PixelMask | null, mine: PixelMask | null, theirs: PixelMask | null): PixelMask | null {
  const added = mine && base ? subtract(mine, base) : mine;
  const removed = base && mine ? subtract(base, mine) : base;
  let out = theirs && added ? union(theirs, added) : (theirs ?? added)?.clone() ?? null;
  if (out && removed) out = subtract(out, removed);
  return out?.trimmed() ?? null;
}

/** Squared distance from (px, py) to the segment a–b. */
function distanceSq(px: number, py: number, a: Point, b: Point): number {
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const lengthSq = dx * dx + dy * dy;
  const t = lengthSq === 0 ? 0 : Math.max(0, Math.min(1, ((px - a.x) * dx + (py - a.y) * dy) / lengthSq));
  const ex = px - (a.x + t * dx);
  const ey = py - (a.y + t * dy);
  return ex * ex + ey * ey;
}

/** The pixels a disc of `radius` swept from a to b may touch, clipped to `bounds`. */
export function sweptRect(a: Point, b: Point, radius: number, bounds: PixelRect): PixelRect {
  return {
    c0: Math.max(bounds.c0, Math.floor(Math.min(a.x, b.x) - radius - 0.5)),
    r0: Math.max(bounds.r0, Math.floor(Math.min(a.y, b.y) - radius - 0.5)),
    c1: Math.min(bounds.c1, Math.ceil(Math.max(a.x, b.x) + radius + 0.5)),
    r1: Math.min(bounds.r1, Math.ceil(Math.max(a.y, b.y) + radius + 0.5)),
  };
}

/**
 * Sweep a disc of `radius` pixels from a to b (pixel coordinates) onto `mask`, growing it as
 * needed (with slack) but never past `bounds` (the image), unless it already was. Returns the rectangle that may have changed, or
 * null if the sweep misses the image. a === b stamps one disc.
 */
export function sweepDisc(mask: PixelMask, a: Point, b: Point, radius: number, bounds: PixelRect): PixelRect | null {
  const rect = sweptRect(a, b, radius, bounds);
  if (rect.c1 <= rect.c0 || rect.r1 <= rect.r0) return null;
  const m = mask.rect;
  if (rect.c0 < m.c0 || rect.r0 < m.r0 || rect.c1 > m.c1 || rect.r1 > m.r1) {
    // Grow with room to spare (half the size again, at least 32 px) so that a long stroke
    // copies its bitmap a few times, not at every pointer move; trim it at the end.
    const slack = Math.max(32, Math.ceil(Math.max(mask.width, mask.height) / 2));
    mask.ensure({
      c0: Math.max(bounds.c0, Math.min(m.c0, rect.c0 - slack)),
      r0: Math.max(bounds.r0, Math.min(m.r0, rect.r0 - slack)),
      c1: Math.min(bounds.c1, Math.max(m.c1, rect.c1 + slack)),
      r1: Math.min(bounds.r1, Math.max(m.r1, rect.r1 + slack)),
    });
  }
  const limit = radius * radius;
  for (let r = rect.r0; r < rect.r1; r++) {
    const base = (r - mask.row) * mask.width - mask.col;
    for (let c = rect.c0; c < rect.c1; c++) {
      if (distanceSq(c + 0.5, r + 0.5, a, b) <= limit) mask.data[base + c] = 1;
    }
  }
  return rect;
}

/** The mask of a whole stroke (consecutive pointer samples), or null if it misses the image. */
export function strokeMask(points: readonly Point[], radius: number, bounds: PixelRect): PixelMask | null {
  const first = points[0];
  if (!first) return null;
  const mask = new PixelMask(Math.floor(first.x), Math.floor(first.y), 1, 1);
  sweepDisc(mask, first, first, radius, bounds);
  for (let i = 1; i < points.length; i++) sweepDisc(mask, points[i - 1] as Point, points[i] as Point, radius, bounds);
  return mask.trimmed();
}

/** Run-length encode as `annot.model.Mask.from_array` does. */
export function encodeMask(mask: PixelMask): MaskJson {
  const counts: number[] = [];
  let value = 0;
  let run = 0;
  for (const v of mask.data) {
    if (v !== value) {
      counts.push(run);
      run = 0;
      value = v;
    }
    run += 1;
  }
  counts.push(run);
  return { origin: [mask.col, mask.row], size: [mask.width, mask.height], counts };
}

/** Decode `properties.mask`; throws on counts that do not fill width × height. */
export function decodeMask(json: MaskJson): PixelMask {
  const [col, row] = json.origin;
  const [width, height] = json.size;
  const mask = new PixelMask(col, row, width, height);
  let at = 0;
  json.counts.forEach((count, i) => {
    if (count < 0 || at + count > mask.data.length) throw new Error('mask run lengths overflow its size');
    if (i % 2 === 1) mask.data.fill(1, at, at + count);
    at += count;
  });
  if (at !== mask.data.length) throw new Error(`mask run lengths add up to ${at}, not ${mask.data.length}`);
  return mask;
}

/** Is `value` shaped like `properties.mask`? */
export function isMaskJson(value: unknown): value is MaskJson {
  const m = value as MaskJson | null;
  return (
    typeof m === 'object' &&
    m !== null &&
    Array.isArray(m.origin) &&
    Array.isArray(m.size) &&
    Array.isArray(m.counts) &&
    m.counts.every((c) => Number.isInteger(c))
  );
}

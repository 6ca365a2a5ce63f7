/**
 * Brush and eraser for mask annotations (like OHIF's segmentation brush).
 *
 * The brush paints a disc of `radius` image pixels along the dragged path ([ and ] resize it;
 * the cursor shows the disc); on release the stroke (./maskPaint, rasterised on the pixel grid
 * of the image, or of the slice and plane shown) is saved as a new mask annotation, or merged
 * into the target mask (PUT with If-Match). The target is the selected mask annotation of the
 * same label, else the mask this tool last saved on this slice. The eraser removes the stroke's
 * pixels from the target; a mask erased to nothing is deleted.
 *
 * A save that cannot reach the server (no network, 5xx, 408, 429) is kept in the editor's queue
 * of pending saves (./pendingSaves: localStorage, listed as unsaved, retried): a new mask as a
 * create, a merge or an erase as an update with its If-Match version and base mask, an emptied
 * mask as a delete. The target keeps showing the stroke, and further strokes on it replace the
 * kept save. If the mask changed meanwhile (412), the stroke is replayed onto the current
 * version and the user told, rather than dropped.
 *
 * Pointer events are taken on the map element in the capture phase while a mode is on, so
 * OpenLayers neither pans nor selects under the brush (the wheel still zooms). The masks are
 * drawn on a canvas over the map, redrawn after each map render. Brush strokes have their own
 * undo/redo (Ctrl+Z / Ctrl+Shift+Z while the brush or eraser is on): the editor's undo stack
 * holds OpenLayers geometries and a mask lives in the feature's properties.
 */
import type OLMap from 'ol/Map';

import type { AnnotationFeature, AnnotationStatus, ImageDetail, PlaneName } from '../api';
import { getAnnotation } from '../api';
import type { Point, PixelRect } from './maskPaint';
import { decodeMask, encodeMask, isMaskJson, PixelMask, subtract, sweepDisc, union } from './maskPaint';
import type { PendingSave, SaveOutcome, SaveRequest } from './pendingSaves';
import { maskSaveRequest, sendSave } from './pendingSaves';

export type BrushMode = 'brush' | 'eraser';

export const MIN_RADIUS = 0.5;
export const MAX_RADIUS = 200;
/** Overlay opacity of masks (the stroke in progress is drawn a little stronger). */
const MASK_ALPHA = 0.45;
const STROKE_ALPHA = 0.6;

export interface BrushHost {
  label(): string;
  colour(label: string): string;
  canReview(): boolean;
  error(title: string, message: string): void;
  /** A mask was stored or deleted: reload what is shown. */
  saved(): void;
  modeChanged(mode: BrushMode | null, radius: number): void;
  /** Run a save after the kept saves being retried (see AnnotationEditor.serialized). */
  serialized<T>(save: () => Promise<T>): Promise<T>;
  /** Keep a failed save to retry it (null: not a failure that may pass). */
  keep(error: unknown, save: SaveRequest & { key?: string }): PendingSave | null;
  /** A kept save is no longer needed (a later save of the mask went through). */
  forget(key: string): void;
}

/** A store's result: `done` (stored, or kept to retry), `merged` (replayed onto a newer version), `failed`. */
type StoreResult = 'done' | 'merged' | 'failed';

type Volume = { slice: number; plane: PlaneName } | null;

/** A stored mask annotation; shared by undo entries so a re-created one keeps being followed. */
interface MaskRef {
  id: number | string | null;
  version: number;
  label: string;
  status: AnnotationStatus;
  attributes: Record<string, unknown>;
  /** The mask as this user sees it (null: none, or deleted). */
  mask: PixelMask | null;
  /** The mask at `version` on the server (differs from `mask` while a save of it is kept). */
  saved: PixelMask | null;
  /** The kept save of this mask, if its last save could not reach the server. */
  pendingKey: string | null;
  imageId: string;
  volume: Volume;
}

interface StrokeChange {
  ref: MaskRef;
  before: PixelMask | null;
  after: PixelMask | null;
}

/** A mask drawn on an offscreen canvas, one canvas pixel per image pixel. */
class MaskPicture {
  readonly canvas = document.createElement('canvas');

  constructor(
    public mask: PixelMask,
    private colour: string,
  ) {
    this.resize();
  }

  resize(): void {
    this.canvas.width = this.mask.width;
    this.canvas.height = this.mask.height;
    this.paint(this.mask.rect);
  }

  /** Repaint `rect` (pixel coordinates); `hide` pixels are left clear (the eraser's preview). */
  paint(rect: PixelRect, hide?: PixelMask): void {
    const m = this.mask;
    const c0 = Math.max(rect.c0, m.col);
    const r0 = Math.max(rect.r0, m.row);
    const c1 = Math.min(rect.c1, m.col + m.width);
    const r1 = Math.min(rect.r1, m.row + m.height);
    if (c1 <= c0 || r1 <= r0) return;
    const ctx = this.canvas.getContext('2d');
    if (!ctx) return;
    const image = ctx.createImageData(c1 - c0, r1 - r0);
    const rgb = parseColour(this.colour);
    for (let r = r0; r < r1; r++) {
      for (let c = c0; c < c1; c++) {
        if (!m.get(c, r) || hide?.get(c, r)) continue;
        const i = ((r - r0) * (c1 - c0) + (c - c0)) * 4;
        image.data.set([rgb[0], rgb[1], rgb[2], 255], i);
      }
    }
    ctx.putImageData(image, c0 - m.col, r0 - m.row);
  }
}

function parseColour(hex: string): [number, number, number] {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex);
  const n = m?.[1] ? parseInt(m[1], 16) : 0x4363d8;
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class BrushTool {
  private mode: BrushMode | null = null;
  radius = 8;
  private image: ImageDetail | null = null;
  private volume: Volume = null;
  private target: MaskRef | null = null;
  private targetPicture: MaskPicture | null = null;
  private stroke: { mask: PixelMask; picture: MaskPicture; last: Point; erasing: boolean } | null = null;
  private pointer: { x: number; y: number } | null = null;
  private readonly overlay = document.createElement('canvas');
  private undoStack: StrokeChange[] = [];
  private redoStack: StrokeChange[] = [];
  private busy = false;
  private selectedId: string | null = null;
  private frame: number | null = null;
  /** Masks whose last save is kept, by the kept save's key. */
  private readonly pendingRefs = new Map<string, MaskRef>();

  /** `element` is the map's target element (the overlay is laid over it). */
  constructor(
    private readonly map: OLMap,
    private readonly element: HTMLElement,
    private readonly host: BrushHost,
  ) {
    this.overlay.className = 'brush-overlay';
    Object.assign(this.overlay.style, { position: 'absolute', left: '0', top: '0', pointerEvents: 'none', zIndex: '5' });
    element.append(this.overlay);
    map.on('postrender', () => this.redraw());
    element.addEventListener('pointerdown', (e) => this.down(e), { capture: true });
    element.addEventListener('pointermove', (e) => this.move(e), { capture: true });
    element.addEventListener('pointerleave', () => {
      this.pointer = null;
      this.requestRedraw();
    });
    window.addEventListener('pointerup', (e) => void this.up(e), { capture: true });
  }

  get activeMode(): BrushMode | null {
    return this.mode;
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0;
  }

  setContext(image: ImageDetail | null, volume: Volume): void {
    this.image = image;
    this.volume = volume;
    this.stroke = null;
    this.setTarget(null);
    this.undoStack = [];
    this.redoStack = [];
    if (!image) this.setMode(null);
    this.requestRedraw();
  }

  /** Brush, eraser or off. Picking a tool (from off) paints into the selected mask, if any. */
  setMode(mode: BrushMode | null): void {
    const was = this.mode;
    this.mode = this.image ? mode : null;
    this.stroke = null;
    this.element.classList.toggle('is-brushing', this.mode !== null);
    this.element.style.cursor = this.mode ? 'crosshair' : ''; // the disc outline follows it
    if (this.mode && !was) {
      this.setTarget(null);
      if (this.selectedId !== null) void this.loadSelected(this.selectedId);
    }
    this.host.modeChanged(this.mode, this.radius);
    this.requestRedraw();
  }

  /** [ and ]: the radius in image pixels, in steps of about 20%. */
  resize(grow: boolean): void {
    const next = grow ? Math.max(this.radius + 1, this.radius * 1.2) : Math.min(this.radius - 1, this.radius / 1.2);
    this.radius = Math.round(Math.min(MAX_RADIUS, Math.max(MIN_RADIUS, next)) * 2) / 2;
    this.host.modeChanged(this.mode, this.radius);
    this.requestRedraw();
  }

  /** The editor's selection changed: a selected mask becomes the brush's target. */
  setSelection(ids: string[]): void {
    this.selectedId = ids.length === 1 ? (ids[0] ?? null) : null;
    if (this.selectedId !== null && this.mode) void this.loadSelected(this.selectedId);
  }

  private async loadSelected(id: string): Promise<void> {
    if (this.target && String(this.target.id) === id) return;
    // A mask whose save is kept: by its id, or by the key of its kept create (what a click on
    // its dashed footprint selects).
    const kept = [...this.pendingRefs.values()].find((r) => (String(r.id) === id || r.pendingKey === id) && r.imageId === this.image?.id);
    if (kept && this.onSlice(kept)) {
      this.setTarget(kept); // its stroke not saved yet is shown and painted on
      return;
    }
    try {
      const raw = await getAnnotation(id);
      if (this.selectedId !== id || !this.image) return;
      const ref = this.refFrom(raw);
      if (ref) this.setTarget(ref);
    } catch {
      // Not found any more: nothing to paint into; the editor shows the error of its own load.
    }
  }

  /** A mask annotation of the image (and slice) shown, as a target; null if it is not one. */
  private refFrom(raw: AnnotationFeature): MaskRef | null {
    const p = raw.properties;
    if (!this.image || raw.id === undefined || p.kind !== 'mask' || !isMaskJson(p.mask)) return null;
    if (this.volume && (p.slice !== this.volume.slice || p.plane !== this.volume.plane)) return null;
    const mask = decodeMask(p.mask);
    return {
      id: raw.id,
      version: Number(p.version ?? 1),
      label: p.label,
      status: p.status ?? 'draft',
      attributes: p.attributes ?? {},
      mask,
      saved: mask,
      pendingKey: null,
      imageId: this.image.id,
      volume: this.volume,
    };
  }

  private onSlice(ref: MaskRef): boolean {
    return !this.volume || (ref.volume?.slice === this.volume.slice && ref.volume.plane === this.volume.plane);
  }

  private setTarget(ref: MaskRef | null): void {
    this.target = ref;
    this.targetPicture = ref?.mask ? new MaskPicture(ref.mask, this.host.colour(ref.label)) : null;
    this.element.dataset.brushTarget = ref?.id != null ? String(ref.id) : ''; // for tests and styles
    this.requestRedraw();
  }

  private bounds(): PixelRect {
    return { c0: 0, r0: 0, c1: this.image?.width ?? 0, r1: this.image?.height ?? 0 };
  }

  private pixelAt(event: PointerEvent): Point {
    const [x = 0, y = 0] = this.map.getEventCoordinate(event);
    return { x, y: -y }; // map y is minus the pixel row
  }

  private down(event: PointerEvent): void {
    if (!this.mode || event.button !== 0 || !this.image) return;
    event.preventDefault();
    event.stopPropagation();
    if (this.busy) return; // the previous stroke is still being saved
    const erasing = this.mode === 'eraser' || event.shiftKey; // Shift-drag erases with the brush
    if (erasing && !this.usableTarget()) {
      this.host.error('No mask to erase', 'Select a mask annotation (Esc, click it), then erase with E.');
      return;
    }
    const at = this.pixelAt(event);
    const mask = new PixelMask(Math.max(0, Math.floor(at.x)), Math.max(0, Math.floor(at.y)), 1, 1);
    const picture = new MaskPicture(mask, erasing ? '#ffffff' : this.host.colour(this.host.label()));
    this.stroke = { mask, picture, last: at, erasing };
    this.paintTo(at);
  }

  private move(event: PointerEvent): void {
    if (!this.mode) return;
    const rect = this.element.getBoundingClientRect();
    this.pointer = { x: event.clientX - rect.left, y: event.clientY - rect.top };
    if (this.stroke) {
      event.stopPropagation();
      // Coalesced events: every sample the browser saw since the last frame (smoother curves).
      const samples = typeof event.getCoalescedEvents === 'function' ? event.getCoalescedEvents() : [];
      for (const sample of samples.length > 0 ? samples : [event]) this.paintTo(this.pixelAt(sample));
    }
    this.requestRedraw();
  }

  private paintTo(at: Point): void {
    const stroke = this.stroke;
    if (!stroke) return;
    const before = stroke.mask.rect;
    const touched = sweepDisc(stroke.mask, stroke.last, at, this.radius, this.bounds());
    stroke.last = at;
    if (!touched) return;
    const after = stroke.mask.rect;
    if (before.c0 !== after.c0 || before.r0 !== after.r0 || before.c1 !== after.c1 || before.r1 !== after.r1) {
      stroke.picture.resize();
    } else {
      stroke.picture.paint(touched);
    }
    if (stroke.erasing) this.targetPicture?.paint(touched, stroke.mask);
  }

  private async up(event: PointerEvent): Promise<void> {
    const stroke = this.stroke;
    if (!stroke || event.button !== 0) return;
    this.stroke = null;
    const painted = stroke.mask.trimmed();
    if (!painted) {
      this.requestRedraw();
      return;
    }
    this.busy = true;
    try {
      if (stroke.erasing) await this.erase(painted);
      else await this.paint(painted);
    } finally {
      this.busy = false;
      this.requestRedraw();
    }
  }

  /** The target if it can take this stroke: same image, slice and label (for the brush). */
  private usableTarget(label?: string): MaskRef | null {
    const t = this.target;
    if (!t?.mask || !this.image || t.imageId !== this.image.id || !this.onSlice(t)) return null;
    return label === undefined || t.label === label ? t : null;
  }

  private async paint(stroke: PixelMask): Promise<void> {
    const label = this.host.label();
    const target = this.usableTarget(label);
    if (target) {
      const before = target.mask;
      if ((await this.store(target, (current) => (current ? union(current, stroke).trimmed() : stroke))) === 'done') {
        this.record({ ref: target, before, after: target.mask });
      }
      return;
    }
    const image = this.image;
    if (!image) return;
    const ref: MaskRef = {
      id: null,
      version: 0,
      label,
      status: 'draft',
      attributes: {},
      mask: null,
      saved: null,
      pendingKey: null,
      imageId: image.id,
      volume: this.volume,
    };
    if ((await this.store(ref, () => stroke)) === 'done') {
      this.record({ ref, before: null, after: ref.mask });
      this.setTarget(ref);
    }
  }

  private async erase(stroke: PixelMask): Promise<void> {
    const target = this.usableTarget();
    if (!target?.mask) return;
    const before = target.mask;
    const rest = subtract(before, stroke).trimmed();
    if (rest && rest.area === before.area) {
      this.setTarget(target); // the stroke missed the mask: show it whole again
      return;
    }
    if ((await this.store(target, (current) => (current ? subtract(current, stroke).trimmed() : null))) === 'done') {
      this.record({ ref: target, before, after: target.mask });
    }
  }

  /**
   * Make the server hold `next(mask now)` for `ref`: POST (no id yet), PUT with If-Match, or
   * DELETE (null), one save at a time with the kept ones being retried (`next` sees the mask
   * as the save before left it). A save that cannot reach the server is kept and `ref` shows
   * the mask meanwhile (`done` too); one replayed onto a newer version of the mask is `merged`
   * (the stroke is in, but it can no longer be undone alone).
   */
  private store(ref: MaskRef, next: (current: PixelMask | null) => PixelMask | null): Promise<StoreResult> {
    return this.host.serialized(() => this.storeNow(ref, next(ref.mask)));
  }

  private async storeNow(ref: MaskRef, mask: PixelMask | null): Promise<StoreResult> {
    const request = maskSaveRequest(ref.imageId, ref, mask, (m) => this.body(ref, m));
    try {
      const outcome: SaveOutcome = request ? await sendSave(request) : { stored: null, merge: 'none' };
      if (ref.pendingKey !== null) {
        this.pendingRefs.delete(ref.pendingKey);
        this.host.forget(ref.pendingKey);
        ref.pendingKey = null;
      }
      this.adopt(ref, outcome, mask);
      if (this.target === ref) this.setTarget(ref.mask ? ref : null);
      this.host.saved();
      if (outcome.merge === 'none' || outcome.merge === 'gone') return 'done';
      this.tellMerged(outcome);
      this.dropChanges(ref);
      return 'merged';
    } catch (error) {
      const kept = request ? this.host.keep(error, ref.pendingKey !== null ? { ...request, key: ref.pendingKey } : request) : null;
      if (kept) {
        ref.pendingKey = kept.key;
        this.pendingRefs.set(kept.key, ref);
        ref.mask = mask;
        if (this.target === ref) this.setTarget(ref.mask ? ref : null);
        return 'done';
      }
      this.host.error('The mask was not saved', errorText(error));
      if (this.target === ref) this.setTarget(ref); // drop the eraser's preview
      return 'failed';
    }
  }

  /** Take a save's outcome into `ref` (`sent`: the mask sent, the one stored if not merged). */
  private adopt(ref: MaskRef, outcome: SaveOutcome, sent: PixelMask | null): void {
    const stored = outcome.stored;
    if (!stored) {
      Object.assign(ref, { id: null, version: 0, mask: null, saved: null });
      return;
    }
    const p = stored.properties;
    ref.id = stored.id ?? ref.id;
    ref.version = Number(p.version ?? ref.version + 1);
    ref.status = p.status ?? ref.status;
    ref.mask = outcome.merge === 'none' || !isMaskJson(p.mask) ? sent : decodeMask(p.mask);
    ref.saved = ref.mask;
  }

  private tellMerged(outcome: SaveOutcome): void {
    if (outcome.merge === 'rebased') {
      this.host.error('Someone else changed this mask meanwhile', 'Your stroke was applied to their version of it.');
    } else if (outcome.merge === 'recreated') {
      this.host.error('Someone else deleted this mask meanwhile', 'Your mask was saved as a new annotation.');
    }
  }

  /** Forget the undo and redo steps of `ref` (they no longer fit what the server holds). */
  private dropChanges(ref: MaskRef): void {
    this.undoStack = this.undoStack.filter((c) => c.ref !== ref);
    this.redoStack = this.redoStack.filter((c) => c.ref !== ref);
  }

  /**
   * A kept save left the editor's queue: sent by a retry (`outcome`), or refused or discarded
   * (null: back to the mask the server has, and the strokes since cannot be undone).
   */
  pendingSettled(save: PendingSave, outcome: SaveOutcome | null): void {
    const ref = this.pendingRefs.get(save.key);
    if (!ref) return;
    this.pendingRefs.delete(save.key);
    ref.pendingKey = null;
    if (outcome) {
      this.adopt(ref, outcome, ref.mask);
      if (outcome.merge !== 'none' && outcome.merge !== 'gone') this.dropChanges(ref);
    } else {
      ref.mask = ref.saved;
      this.dropChanges(ref);
    }
    if (this.target === ref) this.setTarget(ref.mask ? ref : null);
    this.requestRedraw();
  }

  private body(ref: MaskRef, mask: PixelMask): AnnotationFeature {
    // Reviewers keep an accepted/rejected status; an annotator's edit makes it a draft again.
    const reviewed = ref.status === 'accepted' || ref.status === 'rejected';
    const properties: AnnotationFeature['properties'] = {
      label: ref.label,
      kind: 'mask',
      status: reviewed && !this.host.canReview() ? 'draft' : ref.status,
      mask: encodeMask(mask),
    };
    if (Object.keys(ref.attributes).length > 0) properties.attributes = ref.attributes;
    if (ref.volume) Object.assign(properties, { slice: ref.volume.slice, plane: ref.volume.plane });
    return { type: 'Feature', geometry: null, properties };
  }

  private record(change: StrokeChange): void {
    this.undoStack.push(change);
    this.redoStack = [];
  }

  /** Undo the last stroke (its mask as before; a created mask is deleted again). */
  async undo(): Promise<void> {
    const change = this.undoStack.pop();
    if (!change) return;
    const result = await this.store(change.ref, () => change.before);
    if (result === 'done') this.redoStack.push(change);
    else if (result === 'failed') this.undoStack.push(change);
  }

  async redo(): Promise<void> {
    const change = this.redoStack.pop();
    if (!change) return;
    const result = await this.store(change.ref, () => change.after);
    if (result === 'done') this.undoStack.push(change);
    else if (result === 'failed') this.redoStack.push(change);
  }

  // -- drawing ------------------------------------------------------------------------------

  private requestRedraw(): void {
    if (this.frame !== null) return;
    this.frame = window.requestAnimationFrame(() => {
      this.frame = null;
      this.redraw();
    });
  }

  private redraw(): void {
    const canvas = this.overlay;
    const viewport = this.element;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(viewport.clientWidth * ratio);
    const height = Math.round(viewport.clientHeight * ratio);
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      canvas.style.width = `${viewport.clientWidth}px`;
      canvas.style.height = `${viewport.clientHeight}px`;
    }
    const ctx = canvas.getContext('2d');
    if (!ctx) return;
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!this.mode) return;
    const target = this.usableTarget();
    if (target && this.targetPicture) this.drawPicture(ctx, this.targetPicture, MASK_ALPHA);
    if (this.stroke && !this.stroke.erasing) this.drawPicture(ctx, this.stroke.picture, STROKE_ALPHA);
    this.drawCursor(ctx);
  }

  private drawPicture(ctx: CanvasRenderingContext2D, picture: MaskPicture, alpha: number): void {
    const m = picture.mask;
    const topLeft = this.map.getPixelFromCoordinate([m.col, -m.row]);
    const bottomRight = this.map.getPixelFromCoordinate([m.col + m.width, -(m.row + m.height)]);
    if (!topLeft || !bottomRight) return;
    const [x0 = 0, y0 = 0] = topLeft;
    const [x1 = 0, y1 = 0] = bottomRight;
    ctx.save();
    ctx.imageSmoothingEnabled = false; // show the pixel grid the mask is stored on
    ctx.globalAlpha = alpha;
    ctx.drawImage(picture.canvas, x0, y0, x1 - x0, y1 - y0);
    ctx.restore();
  }

  private drawCursor(ctx: CanvasRenderingContext2D): void {
    if (!this.pointer) return;
    const resolution = this.map.getView().getResolution() ?? 1;
    const r = Math.max(1, this.radius / resolution);
    ctx.save();
    ctx.beginPath();
    ctx.arc(this.pointer.x, this.pointer.y, r, 0, 2 * Math.PI);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = this.mode === 'eraser' ? '#ffffff' : this.host.colour(this.host.label());
    ctx.setLineDash(this.mode === 'eraser' ? [4, 3] : []);
    ctx.stroke();
    ctx.restore();
  }
}

/**
 * Annotations on the map: the visible ones loaded from the server (crs=pixel; volumes per slice
 * and plane), drawn in their label colours; drawing tools (polygon, freehand polygon, box, point,
 * polyline, hole), snapping, vertex editing, moving, delete, undo and redo, each change saved at
 * once (POST / PUT or DELETE with If-Match). A save that cannot reach the server is kept (see
 * ./pendingSaves) and retried until it lands; the brush's mask saves join the same queue
 * (`keepSave`, `serialized`).
 *
 * Map coordinates are pixels with y flipped, so GeoJSON `[col, row]` is map `[col, -row]`.
 */
import type OLMap from 'ol/Map';
import Feature from 'ol/Feature';
import GeoJSON from 'ol/format/GeoJSON';
import type Geometry from 'ol/geom/Geometry';
import LinearRing from 'ol/geom/LinearRing';
import Polygon from 'ol/geom/Polygon';
import { primaryAction } from 'ol/events/condition';
import { buffer, getHeight, getWidth } from 'ol/extent';
import Draw, { createBox } from 'ol/interaction/Draw';
import Modify from 'ol/interaction/Modify';
import Select from 'ol/interaction/Select';
import Snap from 'ol/interaction/Snap';
import Translate from 'ol/interaction/Translate';
import VectorLayer from 'ol/layer/Vector';
import VectorSource from 'ol/source/Vector';
import { Circle as CircleStyle, Fill, Stroke, Style } from 'ol/style';
import type { FeatureLike } from 'ol/Feature';

import type { AnnotationFeature, AnnotationStatus, ImageDetail, Label, PlaneName } from '../api';
import { ApiError, createAnnotation, deleteAnnotation, queryAnnotations, updateAnnotation } from '../api';
import { isMaskJson } from './maskPaint';
import type { PendingSave, SaveOutcome, SaveRequest } from './pendingSaves';
import { isRetryable, PendingSaves, retryDelayMs, sendSave } from './pendingSaves';

export type Tool = 'polygon' | 'freehand' | 'box' | 'point' | 'line' | 'hole';

const format = new GeoJSON();

/** Flip y of every position in a GeoJSON coordinate tree (pixel row ↔ map y). */
function flip(coords: unknown): unknown {
  if (Array.isArray(coords) && typeof coords[0] === 'number') {
    const [x, y, ...rest] = coords as number[];
    return [x, -(y ?? 0), ...rest];
  }
  return Array.isArray(coords) ? coords.map(flip) : coords;
}

/** The OpenLayers geometry (map coordinates) of a Feature in pixel coordinates. */
export function mapGeometry(raw: AnnotationFeature): Geometry | null {
  if (!raw.geometry) return null;
  return format.readGeometry({ type: raw.geometry.type, coordinates: flip(raw.geometry.coordinates) }) ?? null;
}

/**
 * What marks a kept save on the map: its shape, or for a mask sent without one (the brush's
 * saves) the mask's footprint box, as the server would store it.
 */
export function pendingGeometry(raw: AnnotationFeature): Geometry | null {
  const shape = mapGeometry(raw);
  const mask = raw.properties.mask;
  if (shape || raw.properties.kind !== 'mask' || !isMaskJson(mask)) return shape;
  const [c0, r0] = mask.origin;
  const [w, h] = mask.size;
  return new Polygon([[[c0, -r0], [c0 + w, -r0], [c0 + w, -(r0 + h)], [c0, -(r0 + h)], [c0, -r0]]]);
}

const PALETTE = ['#e6194b', '#3cb44b', '#ffe119', '#4363d8', '#f58231', '#911eb4', '#46f0f0', '#f032e6'];

function fallbackColour(label: string): string {
  let h = 0;
  for (const c of label) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length] ?? '#4363d8';
}

function withAlpha(hex: string, alpha: number): string {
  const m = /^#?([0-9a-f]{6})$/i.exec(hex);
  if (!m?.[1]) return hex;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

type Change =
  | { kind: 'create'; feature: Feature }
  | { kind: 'modify'; feature: Feature; before: Geometry; after: Geometry }
  | { kind: 'delete'; feature: Feature };

export interface AnnotationEvents {
  error: (title: string, message: string) => void;
  /** Something was saved, loaded or undone: the number of annotations shown. */
  changed?: (count: number) => void;
  /** A change reached the server (a save, undo, redo, a kept save retried). */
  saved?: () => void;
  /** The server's answer to a create or update (so a list can update its row without a query). */
  stored?: (feature: AnnotationFeature) => void;
  /** An annotation was deleted on the server. */
  deleted?: (id: number | string) => void;
  toolChanged?: (tool: Tool | null) => void;
  /** The ids of the selected annotations. */
  selectionChanged?: (ids: string[]) => void;
  /** The changes of this image waiting to be saved. */
  pendingChanged?: (pending: PendingSave[]) => void;
  /**
   * A kept save left the queue: sent (with the server's answer), or refused or discarded
   * (null). The brush follows its masks' kept saves this way.
   */
  pendingSettled?: (save: PendingSave, outcome: SaveOutcome | null) => void;
  snapChanged?: (on: boolean) => void;
}

/** Statuses only reviewers set: an annotator's edit of such a shape makes it a draft again. */
const REVIEWED: readonly AnnotationStatus[] = ['accepted', 'rejected'];

function openStorage(): PendingSaves | null {
  try {
    return new PendingSaves(window.localStorage);
  } catch {
    return null; // storage disabled: failed saves are shown, not kept
  }
}

export class AnnotationEditor {
  private readonly source = new VectorSource();
  private readonly layer: VectorLayer;
  private readonly select: Select;
  private readonly modify: Modify;
  private readonly translate: Translate;
  private readonly snap: Snap;
  private draw: Draw | null = null;
  private tool: Tool | null = null;
  private holeTarget: Feature | null = null;
  private image: ImageDetail | null = null;
  private volume: { slice: number; plane: PlaneName } | null = null;
  private colours = new Map<string, string>();
  private undoStack: Change[] = [];
  private redoStack: Change[] = [];
  private loading: AbortController | null = null;
  private modifying = new Map<Feature, Geometry>();
  private focusId: string | null = null;
  /** Annotations outlined besides the selection (a finding's other annotation). */
  private highlighted = new Set<string>();
  private readonly pendingStore = openStorage();
  private retryTimer: number | null = null;
  private retrying = false;
  /** Retries and the brush's saves of masks with kept saves run one at a time, in order. */
  private saveChain: Promise<unknown> = Promise.resolve();
  label = 'lesion';
  /** Reviewers keep a shape's accepted/rejected status when they edit it. */
  canReview = false;

  constructor(
    private readonly map: OLMap,
    private readonly events: AnnotationEvents,
  ) {
    this.layer = new VectorLayer({
      source: this.source,
      style: (feature) => this.style(feature, feature === this.holeTarget),
      properties: { role: 'annotations' },
      zIndex: 10,
    });
    map.addLayer(this.layer);
    this.select = new Select({
      layers: [this.layer],
      style: (feature) => this.style(feature, true),
    });
    // Order matters: the last added sees events first. Modify (vertices) before Translate
    // (the whole shape), and Snap after every interaction that moves points.
    // A mask's shape is its footprint box: it is edited with the brush (map/brushTool), and a
    // dragged box would be saved as a polygon in its place.
    const noMask = (): boolean => this.select.getFeatures().getArray().every((f) => f.get('kind') !== 'mask');
    this.translate = new Translate({ features: this.select.getFeatures(), condition: noMask });
    this.modify = new Modify({
      features: this.select.getFeatures(),
      condition: (event) => primaryAction(event) && noMask(),
    });
    this.snap = new Snap({ source: this.source });
    map.addInteraction(this.select);
    map.addInteraction(this.translate);
    map.addInteraction(this.modify);
    map.addInteraction(this.snap);
    this.snap.setActive(false); // off until asked for (S): it moves clicks silently
    this.modify.on('modifystart', (event) => this.startEdit(event.features.getArray() as Feature[]));
    this.modify.on('modifyend', () => this.endEdit());
    this.translate.on('translatestart', (event) => this.startEdit(event.features.getArray() as Feature[]));
    this.translate.on('translateend', (event) => {
      const [x0, y0] = event.startCoordinate;
      const [x1, y1] = event.coordinate;
      if (x0 === x1 && y0 === y1) {
        this.modifying.clear(); // a click on the selection, not a move
        return;
      }
      this.endEdit();
    });
    const selected = this.select.getFeatures();
    const tellSelection = (): void =>
      this.events.selectionChanged?.(selected.getArray().map((f) => String(f.getId() ?? f.get('pending') ?? '')));
    selected.on('add', tellSelection);
    selected.on('remove', tellSelection);
    map.on('moveend', () => void this.reload());
    window.addEventListener('online', () => void this.retryPending());
  }

  setLabels(labels: Label[]): void {
    // A fixed taxonomy: draw with one of its labels rather than a made-up one.
    const drawable = labels.filter((l) => !(l.kinds && l.kinds.length === 1 && l.kinds[0] === 'tag'));
    const first = drawable[0] ?? labels[0];
    if (first && !labels.some((l) => l.name === this.label)) this.label = first.name;
    this.colours = new Map(labels.map((l) => [l.name, l.color ?? fallbackColour(l.name)]));
    this.layer.changed();
  }

  colour(label: string): string {
    return this.colours.get(label) ?? fallbackColour(label);
  }

  /** The image (in the plane shown) and, for volumes, the slice and plane. */
  setContext(image: ImageDetail | null, volume: { slice: number; plane: PlaneName } | null): void {
    const sameImage = image?.id === this.image?.id;
    this.image = image;
    this.volume = volume;
    this.contextListener?.(image, volume);
    this.undoStack = [];
    this.redoStack = [];
    this.select.getFeatures().clear();
    this.source.clear();
    this.setTool(null);
    this.showPendingCreates();
    this.events.pendingChanged?.(this.pending());
    if (!sameImage) void this.retryPending();
    void this.reload();
  }

  get count(): number {
    return this.source.getFeatures().length;
  }

  get activeTool(): Tool | null {
    return this.tool;
  }

  get canUndo(): boolean {
    return this.undoStack.length > 0;
  }

  get canRedo(): boolean {
    return this.redoStack.length > 0;
  }

  get snapping(): boolean {
    return this.snap.getActive();
  }

  setSnapping(on: boolean): void {
    this.snap.setActive(on);
    this.events.snapChanged?.(on);
  }

  /** Load the annotations in the visible part of the image. */
  async reload(): Promise<void> {
    const image = this.image;
    if (!image || this.overview) return; // the overview layer shows them (setOverview)
    const extent = this.map.getView().calculateExtent(this.map.getSize());
    const [x0 = 0, y0 = 0, x1 = 0, y1 = 0] = extent;
    const bbox: [number, number, number, number] = [
      Math.max(0, x0),
      Math.max(0, -y1),
      Math.min(image.width, x1),
      Math.min(image.height, -y0),
    ];
    if (!(bbox[2] > bbox[0] && bbox[3] > bbox[1])) return;
    this.loading?.abort();
    const loading = new AbortController();
    this.loading = loading;
    try {
      const answer = await queryAnnotations(image.id, bbox, this.volume ?? undefined, loading.signal);
      if (loading.signal.aborted || this.image !== image) return;
      if (this.modifying.size > 0) return; // a drag is in progress: the next move reloads
      // Keep the Feature objects of annotations already shown (selection and undo hold them);
      // update them, add the new ones, drop the ones no longer visible. Unsaved ones stay.
      const shown = new Map<string, Feature>();
      for (const f of this.source.getFeatures()) {
        const id = f.getId();
        if (id !== undefined) shown.set(String(id), f);
      }
      const seen = new Set<string>();
      for (const raw of answer.features) {
        const fresh = this.toOl(raw);
        if (!fresh || raw.id === undefined) continue;
        const key = String(raw.id);
        seen.add(key);
        const existing = shown.get(key);
        if (existing) {
          if (Number(existing.get('version')) !== Number(fresh.get('version')) && !existing.get('pending')) {
            existing.setGeometry(fresh.getGeometry());
            this.adopt(existing, raw);
          }
        } else {
          this.source.addFeature(fresh);
        }
      }
      for (const [key, f] of shown) {
        if (!seen.has(key) && !f.get('pending')) {
          this.select.getFeatures().remove(f);
          this.source.removeFeature(f);
        }
      }
      if (this.focusId !== null && this.selectById(this.focusId)) this.focusId = null;
      this.events.changed?.(this.count);
    } catch (error) {
      if (loading.signal.aborted) return;
      this.events.error('Annotations could not be loaded', error instanceof Error ? error.message : String(error));
    }
  }

  setTool(tool: Tool | null): void {
    if (this.draw) {
      this.map.removeInteraction(this.draw);
      this.draw = null;
    }
    const target = tool === 'hole' ? this.selectedPolygon() : null;
    if (tool === 'hole' && !target) {
      this.events.error('No polygon selected', 'Click a polygon to select it, then press H to draw a hole in it.');
      tool = null;
    }
    this.holeTarget = target;
    this.tool = tool;
    if (tool && this.image) {
      const draw =
        tool === 'box'
          ? new Draw({ type: 'Circle', geometryFunction: createBox(), stopClick: true })
          : new Draw({
              type: tool === 'line' ? 'LineString' : tool === 'point' ? 'Point' : 'Polygon',
              // Shift-drag draws freehand with the polygon and line tools (OpenLayers' default).
              freehand: tool === 'freehand',
              stopClick: true,
            });
      draw.on('drawstart', () => {
        this.drawing = true;
      });
      draw.on('drawabort', () => {
        this.drawing = false;
      });
      draw.on('drawend', (event) => {
        this.drawing = false;
        if (this.tool === 'hole') {
          void this.addHole(event.feature);
          return;
        }
        this.source.addFeature(event.feature);
        void this.saveNew(event.feature);
      });
      this.map.addInteraction(draw);
      this.draw = draw;
      this.select.getFeatures().clear();
      this.select.setActive(false);
      this.translate.setActive(false);
    } else {
      this.select.setActive(true);
      this.translate.setActive(true);
    }
    // Snap must come after the draw interaction to see its pointer events first.
    this.map.removeInteraction(this.snap);
    this.map.addInteraction(this.snap);
    this.layer.changed();
    this.events.toolChanged?.(this.tool);
  }

  /** Esc: drop the shape being drawn, or leave the tool. */
  cancel(): void {
    if (this.draw && this.drawing) {
      this.draw.abortDrawing();
      return;
    }
    this.setTool(null);
    this.select.getFeatures().clear();
  }

  private drawing = false;

  /** Zoom to an annotation (from the list or the review queue) and select it. */
  showAnnotation(raw: AnnotationFeature): void {
    const geometry = mapGeometry(raw);
    if (!geometry || raw.id === undefined) return;
    if (this.tool) this.setTool(null);
    if (this.highlighted.size > 0) {
      this.highlighted.clear();
      this.layer.changed();
    }
    const extent = geometry.getExtent();
    // A margin around the shape (a point has no size): a tenth of it, at least 16 pixels.
    const margin = Math.max(16, 0.1 * Math.max(getWidth(extent), getHeight(extent)));
    this.focusId = String(raw.id);
    if (this.selectById(this.focusId)) this.focusId = null;
    this.map.getView().fit(buffer(extent, margin), { padding: [40, 40, 40, 40], duration: 0 });
  }

  /**
   * Zoom to a map extent (a quality finding's, see ui/quality) and select annotation `id` (once
   * loaded, if it is editable here); `related` are outlined as well (what it duplicates or
   * overlaps) until the next call.
   */
  showExtent(extent: [number, number, number, number], id: number | null, related: readonly number[] = []): void {
    if (this.tool) this.setTool(null);
    this.highlighted = new Set(related.map(String));
    this.layer.changed();
    this.focusId = id !== null ? String(id) : null;
    if (this.focusId === null) this.select.getFeatures().clear();
    else if (this.selectById(this.focusId)) this.focusId = null;
    this.map.getView().fit(extent, { padding: [40, 40, 40, 40], duration: 0 });
  }

  /** The ids outlined by `showExtent`. */
  get highlightedIds(): string[] {
    return [...this.highlighted];
  }

  private selectById(id: string): boolean {
    const feature = this.source.getFeatures().find((f) => String(f.getId()) === id);
    if (!feature) return false;
    const selected = this.select.getFeatures();
    selected.clear();
    selected.push(feature);
    return true;
  }

  private selectedPolygon(): Feature | null {
    const selected = this.select.getFeatures().getArray();
    const feature = selected.length === 1 ? selected[0] : undefined;
    return feature && feature.getGeometry() instanceof Polygon && feature.getId() !== undefined ? feature : null;
  }

  private properties(feature: Feature, status?: AnnotationStatus): AnnotationFeature['properties'] {
    const label = String(feature.get('label') ?? this.label);
    let kept = (feature.get('status') as AnnotationStatus | undefined) ?? 'draft';
    if (!this.canReview && REVIEWED.includes(kept)) kept = 'draft';
    const props: AnnotationFeature['properties'] = { label, status: status ?? kept };
    const attributes = feature.get('attributes') as Record<string, unknown> | undefined;
    if (attributes && Object.keys(attributes).length > 0) props.attributes = attributes;
    const slice = feature.get('slice') as number | undefined;
    const plane = feature.get('plane') as PlaneName | undefined;
    if (slice !== undefined && plane !== undefined) return { ...props, slice, plane };
    return this.volume ? { ...props, slice: this.volume.slice, plane: this.volume.plane } : props;
  }

  private toGeoJson(feature: Feature, status?: AnnotationStatus): AnnotationFeature {
    const geometry = feature.getGeometry();
    const written = geometry ? (format.writeGeometryObject(geometry) as { type: string; coordinates: unknown }) : null;
    return {
      type: 'Feature',
      geometry: written ? ({ type: written.type, coordinates: flip(written.coordinates) } as AnnotationFeature['geometry']) : null,
      properties: this.properties(feature, status),
    };
  }

  private toOl(raw: AnnotationFeature): Feature | null {
    const geometry = mapGeometry(raw);
    if (!geometry) return null;
    const feature = new Feature(geometry);
    this.adopt(feature, raw);
    return feature;
  }

  /** Take the stored annotation's id, version and properties. */
  private adopt(feature: Feature, stored: AnnotationFeature): void {
    if (stored.id !== undefined) feature.setId(stored.id);
    const p = stored.properties;
    feature.setProperties({
      version: p.version ?? 1,
      label: p.label,
      status: p.status ?? 'draft',
      author: p.author,
      attributes: p.attributes ?? {},
      kind: p.kind,
    });
  }

  private finishChange(change: Change): void {
    this.undoStack.push(change);
    this.redoStack = [];
    this.events.changed?.(this.count);
    this.events.saved?.();
  }

  private startEdit(features: Feature[]): void {
    this.modifying.clear();
    for (const f of features) {
      const geometry = f.getGeometry();
      if (geometry) this.modifying.set(f, geometry.clone());
    }
  }

  private endEdit(): void {
    for (const [feature, before] of this.modifying) void this.saveEdit(feature, before);
    this.modifying.clear();
  }

  private async saveEdit(feature: Feature, before: Geometry): Promise<void> {
    const after = feature.getGeometry()?.clone();
    if (after && (await this.saveModify(feature, before))) this.finishChange({ kind: 'modify', feature, before, after });
  }

  /**
   * Add a shape made elsewhere (the Assist tool's accepted proposal, pixel coordinates) as a new
   * annotation with the current label, saved like a drawn one (kept if the server cannot be
   * reached, undoable).
   */
  addShape(raw: AnnotationFeature): void {
    const geometry = mapGeometry(raw);
    if (!geometry || !this.image) return;
    const feature = new Feature(geometry);
    const { slice, plane } = raw.properties;
    if (slice !== undefined && plane !== undefined) feature.setProperties({ slice, plane });
    this.source.addFeature(feature);
    void this.saveNew(feature);
  }

  private async saveNew(feature: Feature): Promise<void> {
    const image = this.image;
    if (!image) return;
    feature.set('label', this.label);
    feature.set('status', 'draft');
    const body = this.toGeoJson(feature);
    try {
      const stored = await createAnnotation(image.id, body);
      this.adopt(feature, stored);
      this.events.stored?.(stored);
      this.finishChange({ kind: 'create', feature });
    } catch (error) {
      if (this.keepPending(error, { imageId: image.id, op: 'create', feature: body }, feature)) return;
      this.source.removeFeature(feature);
      this.events.error('The annotation was not saved', error instanceof Error ? error.message : String(error));
    }
  }

  /** PUT the feature's current shape; on failure put `before` back (unless kept to retry). */
  private async saveModify(feature: Feature, before: Geometry, status?: AnnotationStatus): Promise<boolean> {
    const id = feature.getId();
    const image = this.image;
    if (id === undefined || !image) return false;
    const body = this.toGeoJson(feature, status);
    const version = Number(feature.get('version'));
    try {
      const stored = await updateAnnotation(id, version, body);
      this.adopt(feature, stored);
      this.events.stored?.(stored);
      this.events.changed?.(this.count);
      return true;
    } catch (error) {
      if (this.keepPending(error, { key: `update-${String(id)}`, imageId: image.id, op: 'update', id, version, feature: body }, feature)) {
        return false;
      }
      feature.setGeometry(before);
      if (error instanceof ApiError && error.status === 412) {
        this.events.error('Someone else changed this annotation', 'Your edit was not saved; the current version is shown.');
        void this.reload();
      } else {
        this.events.error('The change was not saved', error instanceof Error ? error.message : String(error));
      }
      return false;
    }
  }

  /** Draw-end of the hole tool: the drawn ring becomes an interior ring of the target. */
  private async addHole(drawn: Feature): Promise<void> {
    const target = this.holeTarget;
    const polygon = target?.getGeometry();
    const ring = drawn.getGeometry();
    if (!target || !(polygon instanceof Polygon) || !(ring instanceof Polygon)) return;
    const coordinates = ring.getLinearRing(0)?.getCoordinates() ?? [];
    if (!coordinates.every((c) => polygon.intersectsCoordinate(c))) {
      this.events.error('The hole was not added', 'A hole must lie inside the selected polygon.');
      return;
    }
    const before = polygon.clone();
    const withHole = polygon.clone();
    withHole.appendLinearRing(new LinearRing(coordinates));
    target.setGeometry(withHole);
    await this.saveEdit(target, before);
  }

  /** Delete the selected annotations. */
  async deleteSelected(): Promise<void> {
    for (const feature of [...this.select.getFeatures().getArray()]) {
      const id = feature.getId();
      const image = this.image;
      if (id === undefined || !image) continue;
      const version = Number(feature.get('version'));
      try {
        await deleteAnnotation(id, version);
        this.events.deleted?.(id);
        this.select.getFeatures().remove(feature);
        this.source.removeFeature(feature);
        this.finishChange({ kind: 'delete', feature });
      } catch (error) {
        if (this.keepPending(error, { key: `delete-${String(id)}`, imageId: image.id, op: 'delete', id, version })) {
          this.select.getFeatures().remove(feature);
          this.source.removeFeature(feature);
          continue;
        }
        this.events.error('The annotation was not deleted', error instanceof Error ? error.message : String(error));
      }
    }
  }

  /** Undo the last saved change (create → delete, modify → old shape, delete → create again). */
  async undo(): Promise<void> {
    const change = this.undoStack.pop();
    if (!change || !this.image) return;
    if (await this.apply(change, 'backward')) this.redoStack.push(change);
    else this.undoStack.push(change);
  }

  /** Redo the last undone change. */
  async redo(): Promise<void> {
    const change = this.redoStack.pop();
    if (!change || !this.image) return;
    if (await this.apply(change, 'forward')) this.undoStack.push(change);
    else this.redoStack.push(change);
  }

  /** Do a change again (forward) or revert it (backward); true if the server took it. */
  private async apply(change: Change, direction: 'forward' | 'backward'): Promise<boolean> {
    const image = this.image;
    if (!image) return false;
    const { feature } = change;
    const removes = (change.kind === 'create') === (direction === 'backward');
    try {
      if (change.kind === 'modify') {
        const [from, to] = direction === 'backward' ? [change.after, change.before] : [change.before, change.after];
        feature.setGeometry(to.clone());
        const saved = await this.saveModify(feature, from.clone());
        if (saved) this.events.saved?.();
        return saved;
      }
      if (removes) {
        const id = feature.getId();
        if (id !== undefined) {
          await deleteAnnotation(id, Number(feature.get('version')));
          this.events.deleted?.(id);
        }
        this.select.getFeatures().remove(feature);
        if (this.source.hasFeature(feature)) this.source.removeFeature(feature);
      } else {
        const stored = await createAnnotation(image.id, this.toGeoJson(feature));
        this.adopt(feature, stored);
        this.events.stored?.(stored);
        if (!this.source.hasFeature(feature)) this.source.addFeature(feature);
      }
      this.events.changed?.(this.count);
      this.events.saved?.();
      return true;
    } catch (error) {
      this.events.error(direction === 'backward' ? 'Undo failed' : 'Redo failed', error instanceof Error ? error.message : String(error));
      return false;
    }
  }

  /** PUT the given annotations (from a listing, pixel coordinates) with a new status. */
  async setStatus(features: AnnotationFeature[], status: AnnotationStatus): Promise<number> {
    let done = 0;
    for (const raw of features) {
      if (raw.id === undefined) continue;
      const body: AnnotationFeature = {
        type: 'Feature',
        geometry: raw.geometry,
        properties: statusBody(raw, status),
      };
      try {
        this.events.stored?.(await updateAnnotation(raw.id, Number(raw.properties.version ?? 1), body));
        done += 1;
      } catch (error) {
        this.events.error(`#${String(raw.id)} was not changed`, error instanceof Error ? error.message : String(error));
      }
    }
    void this.reload();
    return done;
  }

  // -- saves kept for later ----------------------------------------------------------------

  /** The changes of the current image waiting to be saved. */
  pending(): PendingSave[] {
    return this.image && this.pendingStore ? this.pendingStore.forImage(this.image.id) : [];
  }

  /** Keep a failed save if it may pass later; the entry if kept (the shape stays as drawn). */
  private keepPending(
    error: unknown,
    save: Omit<PendingSave, 'key' | 'since' | 'attempts' | 'error'> & { key?: string },
    feature?: Feature,
  ): PendingSave | null {
    if (!this.pendingStore || !isRetryable(error)) return null;
    const message = error instanceof Error ? error.message : String(error);
    const entry = this.pendingStore.put({ ...save, key: save.key ?? (feature?.get('pending') as string | undefined), error: message });
    if (feature) {
      feature.set('pending', entry.key);
      feature.changed();
    }
    this.events.error('Not saved yet', `${message}. The change is kept on this computer and saved when the server answers again.`);
    this.events.pendingChanged?.(this.pending());
    this.scheduleRetry(entry.attempts);
    return entry;
  }

  private scheduleRetry(attempts: number): void {
    if (this.retryTimer !== null) window.clearTimeout(this.retryTimer);
    this.retryTimer = window.setTimeout(() => {
      this.retryTimer = null;
      void this.retryPending();
    }, retryDelayMs(attempts));
  }

  /** Pending creates of this image (and this slice) drawn on the map, marked unsaved. */
  private showPendingCreates(): void {
    for (const save of this.pending()) {
      if (save.op !== 'create' || !save.feature) continue;
      const p = save.feature.properties;
      if (this.volume && (p.slice !== this.volume.slice || p.plane !== this.volume.plane)) continue;
      this.addPendingCreate(save.key, save.feature);
    }
  }

  /** A dashed shape for a create not saved yet (not for another image or slice). */
  private addPendingCreate(key: string | null, raw: AnnotationFeature): Feature | null {
    const geometry = pendingGeometry(raw);
    if (!geometry) return null;
    const p = raw.properties;
    const feature = new Feature(geometry);
    feature.setProperties({ label: p.label, status: p.status ?? 'draft', slice: p.slice, plane: p.plane, kind: p.kind });
    if (key !== null) feature.set('pending', key);
    this.source.addFeature(feature);
    return feature;
  }

  private pendingFeature(key: string): Feature | undefined {
    return this.source.getFeatures().find((f) => f.get('pending') === key);
  }

  /**
   * Run `save` after the retries and saves queued before it, and before those queued after: a
   * kept save is never sent twice at once (the brush goes through here for its masks).
   */
  serialized<T>(save: () => Promise<T>): Promise<T> {
    const run = this.saveChain.then(save, save);
    this.saveChain = run.catch(() => undefined);
    return run;
  }

  /** Try every pending save of the current image once more (in order). */
  async retryPending(): Promise<void> {
    const image = this.image;
    const store = this.pendingStore;
    if (!image || !store || this.retrying) return;
    this.retrying = true;
    try {
      await this.serialized(async () => {
        for (const save of store.forImage(image.id)) {
          const ok = await this.retryOne(save);
          if (!ok) break; // still unreachable: keep the order, try again later
        }
      });
    } finally {
      this.retrying = false;
      this.events.pendingChanged?.(this.pending());
    }
  }

  /** One pending save; false if it failed again in a way that may pass later. */
  private async retryOne(save: PendingSave): Promise<boolean> {
    const store = this.pendingStore;
    if (!store) return true;
    const feature = this.pendingFeature(save.key);
    const here = this.image?.id === save.imageId;
    try {
      const outcome = await sendSave(save);
      const { stored } = outcome;
      if (stored && here) this.events.stored?.(stored);
      if (save.op === 'delete' || outcome.merge === 'recreated' || (outcome.merge === 'rebased' && !stored)) {
        if (here && save.id !== undefined) this.events.deleted?.(save.id);
      }
      if (feature && here) {
        if (stored) {
          this.adopt(feature, stored);
          const shape = mapGeometry(stored); // a mask's footprint, as stored
          if (shape) feature.setGeometry(shape);
          feature.unset('pending');
        } else {
          this.select.getFeatures().remove(feature);
          this.source.removeFeature(feature);
        }
      }
      store.remove(save.imageId, save.key);
      if (outcome.merge === 'rebased' || outcome.merge === 'recreated') {
        this.events.error(
          outcome.merge === 'rebased' ? 'Someone else changed this mask meanwhile' : 'Someone else deleted this mask meanwhile',
          outcome.merge === 'rebased'
            ? 'Your kept stroke was applied to their version of it.'
            : 'Your kept mask was saved as a new annotation.',
        );
        void this.reload();
      }
      this.events.pendingSettled?.(save, outcome);
      this.events.changed?.(this.count);
      this.events.saved?.();
      return true;
    } catch (error) {
      if (isRetryable(error)) {
        const again = store.put({ ...save, error: error instanceof Error ? error.message : String(error) });
        this.scheduleRetry(again.attempts);
        return false;
      }
      // The server said no: show why, drop the change and show what the server has.
      store.remove(save.imageId, save.key);
      if (feature) {
        this.select.getFeatures().remove(feature);
        this.source.removeFeature(feature); // (the reload shows what the server has)
      }
      const gone = error instanceof ApiError && error.status === 404 && save.op === 'delete';
      if (!gone) {
        const what = save.op === 'create' ? 'The kept annotation' : 'The kept change';
        this.events.error(`${what} was refused`, error instanceof Error ? error.message : String(error));
      }
      this.events.pendingSettled?.(save, null);
      void this.reload();
      return true;
    }
  }

  /**
   * Keep a save the brush could not make (see ./brushTool), as this editor keeps its own: in
   * the queue, marked on the map (a create or update dashed, a delete hidden) and retried.
   * Returns the kept entry, or null if the failure is not one that may pass (`isRetryable`).
   * A `key` already queued is replaced (the newer change of the same mask).
   */
  keepSave(error: unknown, save: SaveRequest & { key?: string }): PendingSave | null {
    if (!this.pendingStore || !isRetryable(error) || save.imageId !== this.image?.id) return null;
    let feature = save.key !== undefined ? this.pendingFeature(save.key) : undefined;
    if (!feature && save.id !== undefined) {
      const shown = this.source.getFeatureById(save.id);
      if (shown && !shown.get('pending')) feature = shown; // (not one marked for another entry)
    }
    if (save.op === 'delete') {
      if (feature) {
        this.select.getFeatures().remove(feature);
        this.source.removeFeature(feature);
      }
      return this.keepPending(error, save);
    }
    const shape = save.feature ? pendingGeometry(save.feature) : null;
    if (feature && shape) feature.setGeometry(shape);
    if (!feature && save.op === 'create' && save.feature) feature = this.addPendingCreate(null, save.feature) ?? undefined;
    return this.keepPending(error, save, feature);
  }

  /**
   * The brush sent a mask whose earlier save was kept (or emptied a mask never stored): drop
   * the kept entry and its mark on the map.
   */
  forgetPending(key: string): void {
    const image = this.image;
    if (!image || !this.pendingStore) return;
    this.pendingStore.remove(image.id, key);
    const feature = this.pendingFeature(key);
    if (feature && feature.getId() === undefined) this.source.removeFeature(feature); // the reload shows the stored one
    else feature?.unset('pending');
    this.events.pendingChanged?.(this.pending());
  }

  /** Drop a pending save without sending it (the list's Discard); the server's version is shown. */
  discardPending(key: string): void {
    const image = this.image;
    if (!image || !this.pendingStore) return;
    const save = this.pendingStore.get(image.id, key);
    const feature = this.pendingFeature(key);
    if (feature) {
      // A shape with an id comes back from the server as stored (the reload adds it again).
      this.select.getFeatures().remove(feature);
      this.source.removeFeature(feature);
    }
    this.pendingStore.remove(image.id, key);
    if (save) this.events.pendingSettled?.(save, null);
    this.events.pendingChanged?.(this.pending());
    void this.reload();
  }

  private style(feature: FeatureLike, selected: boolean): Style[] {
    const colour = this.colour(String(feature.get('label') ?? ''));
    const unsaved = Boolean(feature.get('pending'));
    const stroke = new Stroke({
      color: selected ? '#ffffff' : colour,
      width: selected ? 3 : 2,
      ...(unsaved ? { lineDash: [8, 6] } : {}),
    });
    return [
      new Style({
        stroke,
        fill: new Fill({ color: withAlpha(colour, selected ? 0.3 : 0.18) }),
        image: new CircleStyle({ radius: 6, fill: new Fill({ color: colour }), stroke: new Stroke({ color: '#fff', width: 2 }) }),
      }),
      ...(selected ? [new Style({ stroke: new Stroke({ color: colour, width: 1.5, lineDash: [4, 4] }) })] : []),
      ...(!selected && this.highlighted.has(String(feature.getId() ?? ''))
        ? [new Style({ stroke: new Stroke({ color: '#f59e0b', width: 3, lineDash: [6, 4] }) })]
        : []),
    ];
  }

  // -- the overview layer and live collaboration (map/overviewLayer.ts, map/liveUpdates.ts) --

  private overview = false;
  private contextListener: ((image: ImageDetail | null, volume: { slice: number; plane: PlaneName } | null) => void) | null = null;

  /** Be told of every `setContext` (the overview layer and the live feed follow the image shown). */
  followContext(listener: (image: ImageDetail | null, volume: { slice: number; plane: PlaneName } | null) => void): void {
    this.contextListener = listener;
  }

  /**
   * Zoomed out or crowded, the overview layer shows the annotations: load nothing here and drop
   * the saved shapes shown (unsaved ones stay until their save answers). Off again: reload.
   */
  setOverview(on: boolean): void {
    if (on === this.overview) return;
    this.overview = on;
    if (!on) {
      void this.reload();
      return;
    }
    this.loading?.abort();
    this.loading = null;
    this.select.getFeatures().clear();
    const saved = this.source.getFeatures().filter((f) => f.getId() !== undefined && !f.get('pending'));
    for (const f of saved) this.source.removeFeature(f);
    if (saved.length > 0) this.events.changed?.(this.count); // nothing stored changed: only the count shown
  }

  /**
   * A change stored by someone else (the live feed), in pixel coordinates: add the shape or
   * update the one shown. A version we already have (the echo of our own save) and a shape
   * being dragged are left alone. Returns whether anything changed.
   */
  applyRemote(raw: AnnotationFeature): boolean {
    if (this.overview || !this.image || raw.id === undefined) return false;
    const version = Number(raw.properties.version ?? 1);
    const existing = this.source.getFeatureById(raw.id);
    if (existing) {
      if (Number(existing.get('version')) >= version || this.modifying.has(existing)) return false;
      const geometry = this.toOl(raw)?.getGeometry();
      if (!geometry) return false;
      existing.setGeometry(geometry);
      this.adopt(existing, raw);
    } else {
      const fresh = this.toOl(raw);
      if (!fresh) return false;
      this.source.addFeature(fresh);
    }
    this.events.changed?.(this.count);
    return true;
  }

  /** An annotation someone else deleted: drop it if shown. Returns whether it was. */
  removeRemote(id: number | string): boolean {
    const feature = this.source.getFeatureById(id);
    if (!feature || this.modifying.has(feature)) return false;
    this.select.getFeatures().remove(feature);
    this.source.removeFeature(feature);
    this.events.changed?.(this.count);
    return true;
  }
}

/** The properties to PUT back for an annotation read from a listing, with a new status. */
export function statusBody(raw: AnnotationFeature, status: AnnotationStatus): AnnotationFeature['properties'] {
  const p = raw.properties;
  const body: AnnotationFeature['properties'] = { label: p.label, status };
  for (const key of ['kind', 'attributes', 'keypoints', 'mask', 'slice', 'plane'] as const) {
    if (p[key] !== undefined && p[key] !== null) body[key] = p[key] as never;
  }
  return body;
}

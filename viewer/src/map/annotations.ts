/**
 * Annotations on the map: the visible ones loaded from the server (crs=pixel; volumes per slice
 * and plane), drawn in their label colours; drawing tools (polygon, box, point, polyline), vertex
 * editing, delete and undo, each change saved at once (POST / PUT or DELETE with If-Match).
 *
 * Map coordinates are pixels with y flipped, so GeoJSON `[col, row]` is map `[col, -row]`.
 */
import type OLMap from 'ol/Map';
import Feature from 'ol/Feature';
import GeoJSON from 'ol/format/GeoJSON';
import type Geometry from 'ol/geom/Geometry';
import Draw, { createBox } from 'ol/interaction/Draw';
import Modify from 'ol/interaction/Modify';
import Select from 'ol/interaction/Select';
import VectorLayer from 'ol/layer/Vector';
import VectorSource from 'ol/source/Vector';
import { Circle as CircleStyle, Fill, Stroke, Style } from 'ol/style';
import type { FeatureLike } from 'ol/Feature';

import type { AnnotationFeature, ImageDetail, Label, PlaneName } from '../api';
import { ApiError, createAnnotation, deleteAnnotation, queryAnnotations, updateAnnotation } from '../api';

export type Tool = 'polygon' | 'box' | 'point' | 'line';

const format = new GeoJSON();

/** Flip y of every position in a GeoJSON coordinate tree (pixel row ↔ map y). */
function flip(coords: unknown): unknown {
  if (Array.isArray(coords) && typeof coords[0] === 'number') {
    const [x, y, ...rest] = coords as number[];
    return [x, -(y ?? 0), ...rest];
  }
  return Array.isArray(coords) ? coords.map(flip) : coords;
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
  | { kind: 'modify'; feature: Feature; before: Geometry }
  | { kind: 'delete'; feature: Feature };

export interface AnnotationEvents {
  error: (title: string, message: string) => void;
  /** Something was saved, loaded or undone: the number of annotations shown. */
  changed?: (count: number) => void;
  toolChanged?: (tool: Tool | null) => void;
}

export class AnnotationEditor {
  private readonly source = new VectorSource();
  private readonly layer: VectorLayer;
  private readonly select: Select;
  private readonly modify: Modify;
  private draw: Draw | null = null;
  private tool: Tool | null = null;
  private image: ImageDetail | null = null;
  private volume: { slice: number; plane: PlaneName } | null = null;
  private colours = new Map<string, string>();
  private undoStack: Change[] = [];
  private loading: AbortController | null = null;
  private modifying = new Map<Feature, Geometry>();
  label = 'lesion';

  constructor(
    private readonly map: OLMap,
    private readonly events: AnnotationEvents,
  ) {
    this.layer = new VectorLayer({
      source: this.source,
      style: (feature) => this.style(feature, false),
      properties: { role: 'annotations' },
      zIndex: 10,
    });
    map.addLayer(this.layer);
    this.select = new Select({
      layers: [this.layer],
      style: (feature) => this.style(feature, true),
    });
    this.modify = new Modify({ features: this.select.getFeatures() });
    map.addInteraction(this.select);
    map.addInteraction(this.modify);
    this.modify.on('modifystart', (event) => {
      this.modifying.clear();
      for (const f of event.features.getArray()) {
        const geometry = (f as Feature).getGeometry();
        if (geometry) this.modifying.set(f as Feature, geometry.clone());
      }
    });
    this.modify.on('modifyend', (event) => {
      for (const f of event.features.getArray()) {
        const feature = f as Feature;
        const before = this.modifying.get(feature);
        if (before) void this.saveModify(feature, before, true);
      }
      this.modifying.clear();
    });
    map.on('moveend', () => void this.reload());
  }

  setLabels(labels: Label[]): void {
    // A fixed taxonomy: draw with one of its labels rather than a made-up one.
    const first = labels[0];
    if (first && !labels.some((l) => l.name === this.label)) this.label = first.name;
    this.colours = new Map(labels.map((l) => [l.name, l.color ?? fallbackColour(l.name)]));
    this.layer.changed();
  }

  colour(label: string): string {
    return this.colours.get(label) ?? fallbackColour(label);
  }

  /** The image (in the plane shown) and, for volumes, the slice and plane. */
  setContext(image: ImageDetail | null, volume: { slice: number; plane: PlaneName } | null): void {
    this.image = image;
    this.volume = volume;
    this.undoStack = [];
    this.select.getFeatures().clear();
    this.source.clear();
    this.setTool(null);
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

  /** Load the annotations in the visible part of the image. */
  async reload(): Promise<void> {
    const image = this.image;
    if (!image) return;
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
          if (Number(existing.get('version')) !== Number(fresh.get('version'))) {
            existing.setGeometry(fresh.getGeometry());
            existing.set('version', fresh.get('version'));
            existing.set('label', fresh.get('label'));
          }
        } else {
          this.source.addFeature(fresh);
        }
      }
      for (const [key, f] of shown) {
        if (!seen.has(key)) {
          this.select.getFeatures().remove(f);
          this.source.removeFeature(f);
        }
      }
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
    this.tool = tool;
    if (tool && this.image) {
      const draw =
        tool === 'box'
          ? new Draw({ type: 'Circle', geometryFunction: createBox(), stopClick: true })
          : new Draw({ type: tool === 'polygon' ? 'Polygon' : tool === 'line' ? 'LineString' : 'Point', stopClick: true });
      draw.on('drawstart', () => {
        this.drawing = true;
      });
      draw.on('drawabort', () => {
        this.drawing = false;
      });
      draw.on('drawend', (event) => {
        this.drawing = false;
        this.source.addFeature(event.feature);
        void this.saveNew(event.feature);
      });
      this.map.addInteraction(draw);
      this.draw = draw;
      this.select.getFeatures().clear();
      this.select.setActive(false);
    } else {
      this.select.setActive(true);
    }
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

  private properties(label: string): AnnotationFeature['properties'] {
    return this.volume ? { label, slice: this.volume.slice, plane: this.volume.plane } : { label };
  }

  private toGeoJson(feature: Feature): AnnotationFeature {
    const geometry = feature.getGeometry();
    const written = geometry ? (format.writeGeometryObject(geometry) as { type: string; coordinates: unknown }) : null;
    const label = String(feature.get('label') ?? this.label);
    return {
      type: 'Feature',
      geometry: written ? ({ type: written.type, coordinates: flip(written.coordinates) } as AnnotationFeature['geometry']) : null,
      properties: this.properties(label),
    };
  }

  private toOl(raw: AnnotationFeature): Feature | null {
    if (!raw.geometry) return null;
    const geometry = format.readGeometry({ type: raw.geometry.type, coordinates: flip(raw.geometry.coordinates) });
    const feature = new Feature(geometry ?? undefined);
    if (raw.id !== undefined) feature.setId(raw.id);
    feature.set('label', raw.properties.label);
    feature.set('version', raw.properties.version ?? 1);
    return feature;
  }

  private adopt(feature: Feature, stored: AnnotationFeature): void {
    if (stored.id !== undefined) feature.setId(stored.id);
    feature.set('version', stored.properties.version ?? 1);
    feature.set('label', stored.properties.label);
  }

  private async saveNew(feature: Feature): Promise<void> {
    const image = this.image;
    if (!image) return;
    feature.set('label', this.label);
    try {
      const stored = await createAnnotation(image.id, this.toGeoJson(feature));
      this.adopt(feature, stored);
      this.undoStack.push({ kind: 'create', feature });
      this.events.changed?.(this.count);
    } catch (error) {
      this.source.removeFeature(feature);
      this.events.error('The annotation was not saved', error instanceof Error ? error.message : String(error));
    }
  }

  private async saveModify(feature: Feature, before: Geometry, undoable: boolean): Promise<boolean> {
    const id = feature.getId();
    if (id === undefined) return false;
    try {
      const stored = await updateAnnotation(id, Number(feature.get('version')), this.toGeoJson(feature));
      this.adopt(feature, stored);
      if (undoable) this.undoStack.push({ kind: 'modify', feature, before });
      this.events.changed?.(this.count);
      return true;
    } catch (error) {
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

  /** Delete the selected annotations. */
  async deleteSelected(): Promise<void> {
    for (const feature of [...this.select.getFeatures().getArray()]) {
      const id = feature.getId();
      if (id === undefined) continue;
      try {
        await deleteAnnotation(id, Number(feature.get('version')));
        this.select.getFeatures().remove(feature);
        this.source.removeFeature(feature);
        this.undoStack.push({ kind: 'delete', feature });
        this.events.changed?.(this.count);
      } catch (error) {
        this.events.error('The annotation was not deleted', error instanceof Error ? error.message : String(error));
      }
    }
  }

  /** Undo the last saved change (create → delete, modify → old shape, delete → create again). */
  async undo(): Promise<void> {
    const change = this.undoStack.pop();
    if (!change || !this.image) return;
    const { feature } = change;
    try {
      if (change.kind === 'create') {
        const id = feature.getId();
        if (id !== undefined) await deleteAnnotation(id, Number(feature.get('version')));
        this.select.getFeatures().remove(feature);
        if (this.source.hasFeature(feature)) this.source.removeFeature(feature);
      } else if (change.kind === 'modify') {
        const now = feature.getGeometry()?.clone();
        feature.setGeometry(change.before);
        if (!(await this.saveModify(feature, now ?? change.before, false)) && now) feature.setGeometry(now);
      } else {
        const stored = await createAnnotation(this.image.id, this.toGeoJson(feature));
        this.adopt(feature, stored);
        this.source.addFeature(feature);
      }
      this.events.changed?.(this.count);
    } catch (error) {
      this.events.error('Undo failed', error instanceof Error ? error.message : String(error));
    }
  }

  private style(feature: FeatureLike, selected: boolean): Style[] {
    const colour = this.colour(String(feature.get('label') ?? ''));
    const stroke = new Stroke({ color: selected ? '#ffffff' : colour, width: selected ? 3 : 2 });
    return [
      new Style({
        stroke,
        fill: new Fill({ color: withAlpha(colour, selected ? 0.3 : 0.18) }),
        image: new CircleStyle({ radius: 6, fill: new Fill({ color: colour }), stroke: new Stroke({ color: '#fff', width: 2 }) }),
      }),
      ...(selected ? [new Style({ stroke: new Stroke({ color: colour, width: 1.5, lineDash: [4, 4] }) })] : []),
    ];
  }
}

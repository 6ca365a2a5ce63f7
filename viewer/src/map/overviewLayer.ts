/**
 * The annotations overview: the server's vector tiles of annotations
 * (`/api/v1/images/{id}/annotations/tiles/{z}/{x}/{y}.mvt`, on the image's own tile grid) drawn
 * while the view is zoomed out past `EDITABLE_MAX_RESOLUTION` or shows more than
 * `EDITABLE_MAX_FEATURES` annotations. Then the editor's GeoJSON layer is switched off
 * (`AnnotationEditor.setOverview`); zoomed in on fewer shapes, the editable layer takes over.
 *
 * The tiles keep loading while the editable layer is on (drawn with no style): their feature
 * counts tell when the view gets too crowded to edit. Tiny shapes come as points and crowded
 * ones as their cell's square with a `count` (drawn into the tile image once, not as a symbol
 * every frame), so every annotation stays visible at any zoom.
 */
import type OLMap from 'ol/Map';
import type { FeatureLike } from 'ol/Feature';
import MVT from 'ol/format/MVT';
import VectorTileLayer from 'ol/layer/VectorTile';
import VectorTileSource from 'ol/source/VectorTile';
import { Circle as CircleStyle, Fill, Stroke, Style } from 'ol/style';
import type { TileCoord } from 'ol/tilecoord';

import type { ImageDetail, PlaneName } from '../api';
import { pyramidTileGrid } from './pixelGrid';

/** Above this many image pixels per screen pixel the overview is always on. */
export const EDITABLE_MAX_RESOLUTION = 4;
/** More annotations than this in view (the editor loads one page of 1,000) turn the overview on. */
export const EDITABLE_MAX_FEATURES = 1000;
/** Re-evaluate the mode at most this often while tiles arrive (ms). */
const CHECK_MS = 150;

/** What the overview needs from the annotation editor. */
export interface OverviewEditor {
  colour(label: string): string;
  setOverview(on: boolean): void;
}

type Volume = { slice: number; plane: PlaneName } | null;

function withAlpha(colour: string, alpha: number): string {
  const m = /^#?([0-9a-f]{6})$/i.exec(colour);
  if (!m?.[1]) return colour;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${alpha})`;
}

export function annotationTileUrl(imageId: string, coord: TileCoord, volume: Volume, version: number): string {
  const [z, x, y] = coord;
  const params = new URLSearchParams();
  if (volume) {
    params.set('slice', String(volume.slice));
    params.set('plane', volume.plane);
  }
  // Bumped after every change we hear of: new URLs, while unchanged tiles still answer 304.
  params.set('_v', String(version));
  return `/api/v1/images/${encodeURIComponent(imageId)}/annotations/tiles/${z}/${x}/${y}.mvt?${params.toString()}`;
}

export class OverviewLayer {
  private readonly layer: VectorTileLayer;
  private image: ImageDetail | null = null;
  private volume: Volume = null;
  private version = 0;
  private on = false;
  private checkTimer: number | null = null;
  /** Tiles on their way: until they are in, the count in view is not known. */
  private loadingTiles = 0;
  private readonly styles = new Map<string, Style>();
  /** `#overview=off` in the address (when the page opens) keeps it off: the benchmark's baseline. */
  private readonly enabled = new URLSearchParams(window.location.hash.replace(/^#/, '')).get('overview') !== 'off';

  constructor(
    private readonly map: OLMap,
    private readonly editor: OverviewEditor,
    /** Told when the overview turns on or off (for the status bar and tests). */
    private readonly modeChanged?: (overview: boolean) => void,
  ) {
    this.layer = new VectorTileLayer({
      style: (feature) => (this.on ? this.style(feature) : undefined),
      properties: { role: 'annotation-overview' },
      renderMode: 'hybrid',
      zIndex: 9,
    });
    map.addLayer(this.layer);
    map.on('moveend', () => this.check());
  }

  /** Whether the overview (not the editable layer) shows the annotations now. */
  get active(): boolean {
    return this.on;
  }

  /** The image (in the plane shown) and, for volumes, the slice and plane. */
  setContext(image: ImageDetail | null, volume: Volume): void {
    this.image = image;
    this.volume = volume;
    this.styles.clear(); // label colours may have changed
    this.loadingTiles = 0;
    this.layer.setSource(image && this.enabled ? this.makeSource(image) : null);
    this.check();
  }

  /** Annotations changed on the server: fetch the tiles again (unchanged ones answer 304). */
  refresh(): void {
    const image = this.image;
    const source = this.layer.getSource();
    if (!image || !source) return;
    this.version += 1;
    const volume = this.volume;
    const version = this.version;
    source.setTileUrlFunction((coord) => annotationTileUrl(image.id, coord, volume, version), `v${version}`);
  }

  private makeSource(image: ImageDetail): VectorTileSource {
    const volume = this.volume;
    const version = this.version;
    const source = new VectorTileSource({
      format: new MVT({ idProperty: 'id' }),
      projection: this.map.getView().getProjection(),
      tileGrid: pyramidTileGrid(image),
      tileUrlFunction: (coord) => annotationTileUrl(image.id, coord, volume, version),
      wrapX: false,
      transition: 0,
    });
    source.on('tileloadstart', () => {
      this.loadingTiles += 1;
    });
    const loaded = (): void => {
      this.loadingTiles = Math.max(0, this.loadingTiles - 1);
      this.scheduleCheck();
    };
    source.on('tileloadend', loaded);
    source.on('tileloaderror', loaded);
    return source;
  }

  private scheduleCheck(): void {
    if (this.checkTimer !== null) return;
    this.checkTimer = window.setTimeout(() => {
      this.checkTimer = null;
      this.check();
    }, CHECK_MS);
  }

  /** How many annotations the loaded tiles show in the view (aggregates by their count). */
  private countInView(): number {
    const extent = this.map.getView().calculateExtent(this.map.getSize());
    let count = 0;
    for (const feature of this.layer.getFeaturesInExtent(extent)) {
      count += Number(feature.get('count') ?? 1);
    }
    return count;
  }

  private check(): void {
    const resolution = this.map.getView().getResolution();
    if (!this.image || !this.enabled || resolution === undefined) {
      this.setOn(false);
      return;
    }
    if (resolution > EDITABLE_MAX_RESOLUTION) {
      this.setOn(true);
    } else if (this.loadingTiles === 0) {
      // Only on loaded tiles: while they load, the count is the previous zoom's (or none), and
      // switching on it would make the editor load a page it drops a moment later.
      this.setOn(this.countInView() > EDITABLE_MAX_FEATURES);
    }
  }

  private setOn(on: boolean): void {
    if (on === this.on) return;
    this.on = on;
    this.layer.changed(); // restyle: drawn, or loaded but not drawn
    this.editor.setOverview(on);
    this.modeChanged?.(on);
  }

  private style(feature: FeatureLike): Style {
    const label = String(feature.get('label') ?? '');
    const count = Number(feature.get('count') ?? 1);
    // Aggregates are their cell's square: more shapes, more opaque (log scale).
    const weight = count > 1 ? Math.min(8, Math.round(Math.log2(count))) : 0;
    const key = `${label}|${weight}`;
    let style = this.styles.get(key);
    if (!style) {
      const colour = this.editor.colour(label);
      style =
        count > 1
          ? new Style({ fill: new Fill({ color: withAlpha(colour, Math.min(0.9, 0.3 + 0.08 * weight)) }) })
          : new Style({
              stroke: new Stroke({ color: colour, width: 1.5 }),
              fill: new Fill({ color: withAlpha(colour, 0.2) }),
              image: new CircleStyle({ radius: 3, fill: new Fill({ color: withAlpha(colour, 0.65) }), stroke: new Stroke({ color: colour, width: 1 }) }),
            });
      this.styles.set(key, style);
    }
    return style;
  }

}

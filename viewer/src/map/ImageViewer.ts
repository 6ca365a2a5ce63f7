/**
 * The map: one OpenLayers map whose view is swapped per image. It owns the base tile layer;
 * overlays (annotations, drawing tools) will be added on top through `map` later.
 */
import OLMap from 'ol/Map';
import View from 'ol/View';
import type MapBrowserEvent from 'ol/MapBrowserEvent';
import ScaleLine from 'ol/control/ScaleLine';
import { defaults as defaultControls } from 'ol/control/defaults';
import { defaults as defaultInteractions } from 'ol/interaction/defaults';
import type { EventsKey } from 'ol/events';
import TileLayer from 'ol/layer/Tile';
import { unByKey } from 'ol/Observable';

import type { ImageDetail, TileOptions } from '../api';
import { FitControl } from './FitControl';
import { ImageTileSource } from './imageSource';
import type { PixelPoint } from './pixelGrid';
import { imageExtent, pyramidResolutions, toPixel } from './pixelGrid';

/** How far past full resolution one may zoom (image pixels per screen pixel). */
export const MIN_RESOLUTION = 0.25;
/** Room around a fitted image: top, right, bottom, left (the zoom buttons are on the left). */
const FIT_PADDING = [24, 24, 24, 56];

export interface ImageViewerEvents {
  /** The cursor's image pixel position, or null when it leaves the map. */
  pointer?: (point: PixelPoint | null) => void;
  /** The view changed (zoom or pan): the visible image pixels per screen pixel. */
  view?: (resolution: number) => void;
  /** Tiles started loading (true) or everything wanted is loaded (false). */
  loading?: (loading: boolean) => void;
  /** How many tiles of the image shown failed to load. */
  tileErrors?: (failed: number) => void;
  /** Everything visible is loaded and drawn. */
  rendered?: () => void;
}

export class ImageViewer {
  readonly map: OLMap;
  private readonly baseLayer: TileLayer<ImageTileSource>;
  private readonly scaleLine: ScaleLine;
  private readonly events: ImageViewerEvents;
  private sourceKeys: EventsKey[] = [];
  private current: ImageDetail | null = null;

  constructor(target: HTMLElement, events: ImageViewerEvents = {}) {
    this.events = events;
    // No preload: OpenLayers 10 enqueues the preload from a timeout with the frame it was made
    // for, so after a switch of image or plane it asks the new source for tiles in the old
    // projection and throws "No transform available" between the two pixel projections.
    this.baseLayer = new TileLayer<ImageTileSource>({ preload: 0, properties: { role: 'image' } });
    this.scaleLine = new ScaleLine({ units: 'metric', minWidth: 80 });
    this.map = new OLMap({
      target,
      layers: [this.baseLayer],
      controls: defaultControls({ attribution: false, rotate: false }).extend([
        new FitControl(() => this.fit({ animate: true })),
      ]),
      // The map fills the page, so the wheel always zooms (OL's own default only does so while
      // a focusable map target has the focus). Images are not rotated.
      interactions: defaultInteractions({
        onFocusOnly: false,
        altShiftDragRotate: false,
        pinchRotate: false,
      }),
    });

    this.map.on('pointermove', (event: MapBrowserEvent) => {
      if (!this.current || event.dragging) return;
      events.pointer?.(toPixel(event.coordinate));
    });
    target.addEventListener('pointerleave', () => events.pointer?.(null));
    target.addEventListener('keydown', (event) => {
      if ((event.key === 'f' || event.key === 'F') && !event.ctrlKey && !event.metaKey) {
        this.fit({ animate: true });
      }
    });
    this.map.on('moveend', () => {
      const resolution = this.map.getView().getResolution();
      if (resolution !== undefined) events.view?.(resolution);
    });
    this.map.on('loadstart', () => events.loading?.(true));
    this.map.on('loadend', () => events.loading?.(false));
    this.map.on('rendercomplete', () => {
      if (this.current) events.rendered?.();
    });
  }

  get image(): ImageDetail | null {
    return this.current;
  }

  get source(): ImageTileSource | null {
    return this.baseLayer.getSource();
  }

  /** Show an image, fitted to the map. */
  show(image: ImageDetail, options: TileOptions = {}): void {
    this.current = image;
    const source = new ImageTileSource(image, options);
    const extent = imageExtent(image);
    const resolutions = pyramidResolutions(image.levels);
    const view = new View({
      projection: source.getProjection() ?? undefined,
      extent,
      constrainOnlyCenter: true,
      showFullExtent: true,
      // Smooth (unconstrained) zoom from twice the coarsest level down to 4 screen px per pixel.
      maxResolution: (resolutions[0] ?? 1) * 2,
      minResolution: MIN_RESOLUTION,
      enableRotation: false,
    });
    this.watchTiles(source);
    // Never let a frame pair the old source with the new view's projection (or the other way
    // round): OpenLayers throws "No transform available" between two pixel projections.
    this.baseLayer.setSource(null);
    this.map.setView(view);
    this.baseLayer.setExtent(extent);
    this.baseLayer.setSource(source);
    this.fit();
    this.showScaleLine(source);
  }

  private showScaleLine(source: ImageTileSource): void {
    // Only projected images have a ground distance per pixel.
    if (source.getProjection()?.getPointResolutionFunc()) {
      if (!this.map.getControls().getArray().includes(this.scaleLine)) {
        this.map.addControl(this.scaleLine);
      }
    } else {
      this.map.removeControl(this.scaleLine);
    }
  }

  private watchTiles(source: ImageTileSource | null): void {
    unByKey(this.sourceKeys);
    this.sourceKeys = [];
    let failed = 0;
    this.events.tileErrors?.(failed);
    if (!source) return;
    this.sourceKeys = [
      source.on('tileloaderror', () => {
        failed += 1;
        this.events.tileErrors?.(failed);
      }),
    ];
  }

  /** Zoom to the whole image. */
  fit({ animate = false }: { animate?: boolean } = {}): void {
    if (!this.current) return;
    this.map.updateSize();
    this.map.getView().fit(imageExtent(this.current), {
      padding: FIT_PADDING,
      ...(animate ? { duration: 250 } : {}),
    });
  }

  setTileOptions(options: TileOptions): void {
    this.source?.setTileOptions(options);
  }

  clear(): void {
    this.current = null;
    this.watchTiles(null);
    this.baseLayer.setSource(null);
    this.map.removeControl(this.scaleLine);
  }
}

/**
 * The map: one OpenLayers map whose view is swapped per image. It owns the image tile layers;
 * overlays (annotations, drawing tools) are added on top through `map`.
 *
 * Two modes: `pixels` (the native pyramid in the image's own pixel projection, any image) and
 * `webmercator` (georeferenced images only: the server's WebMercatorQuad tiles in an EPSG:3857
 * view, over an optional XYZ basemap). Pointer and zoom events are in image pixels in both.
 */
import OLMap from 'ol/Map';
import View from 'ol/View';
import type MapBrowserEvent from 'ol/MapBrowserEvent';
import ScaleLine from 'ol/control/ScaleLine';
import { defaults as defaultControls } from 'ol/control/defaults';
import { defaults as defaultInteractions } from 'ol/interaction/defaults';
import type { EventsKey } from 'ol/events';
import type { Extent } from 'ol/extent';
import TileLayer from 'ol/layer/Tile';
import { unByKey } from 'ol/Observable';
import XYZ from 'ol/source/XYZ';
import type TileSource from 'ol/source/Tile';

import type { GeoImageDetail, ImageDetail, TileOptions } from '../api';
import { FitControl } from './FitControl';
import { ImageTileSource } from './imageSource';
import type { MercatorFrame } from './mercator';
import { boundsToMercator, mercatorFrame, mercatorPixelSize, mercatorTileTemplate, WEB_MERCATOR } from './mercator';
import type { PixelPoint } from './pixelGrid';
import { imageExtent, pyramidResolutions, toPixel } from './pixelGrid';

export type MapMode = 'pixels' | 'webmercator';

/** WebMercator mode: how far past the image's own zoom one may zoom in. */
const MERCATOR_EXTRA_ZOOM = 3;

/** What the WebMercator mode of one image knows. */
interface MercatorView {
  image: GeoImageDetail;
  extent: Extent;
  frame: MercatorFrame | null;
}

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
  /** WebMercator mode: the basemap, and the image's WebMercatorQuad tiles above it. */
  private readonly basemapLayer: TileLayer<XYZ>;
  private readonly mercatorLayer: TileLayer<XYZ>;
  private readonly scaleLine: ScaleLine;
  private readonly events: ImageViewerEvents;
  private sourceKeys: EventsKey[] = [];
  private current: ImageDetail | null = null;
  private mercator: MercatorView | null = null;

  constructor(target: HTMLElement, events: ImageViewerEvents = {}) {
    this.events = events;
    // No preload: OpenLayers 10 enqueues the preload from a timeout with the frame it was made
    // for, so after a switch of image or plane it asks the new source for tiles in the old
    // projection and throws "No transform available" between the two pixel projections.
    this.baseLayer = new TileLayer<ImageTileSource>({ preload: 0, properties: { role: 'image' } });
    this.basemapLayer = new TileLayer<XYZ>({ preload: 0, properties: { role: 'basemap' } });
    this.mercatorLayer = new TileLayer<XYZ>({ preload: 0, properties: { role: 'image-webmercator' } });
    this.scaleLine = new ScaleLine({ units: 'metric', minWidth: 80 });
    this.map = new OLMap({
      target,
      layers: [this.basemapLayer, this.baseLayer, this.mercatorLayer],
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
      events.pointer?.(this.pixelAt(event.coordinate));
    });
    target.addEventListener('pointerleave', () => events.pointer?.(null));
    target.addEventListener('keydown', (event) => {
      if ((event.key === 'f' || event.key === 'F') && !event.ctrlKey && !event.metaKey) {
        this.fit({ animate: true });
      }
    });
    this.map.on('moveend', () => {
      const resolution = this.imageResolution();
      if (resolution !== null) events.view?.(resolution);
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

  get mode(): MapMode {
    return this.mercator ? 'webmercator' : 'pixels';
  }

  /** The WebMercator mode's EPSG:3857 extent of the image (from its WGS84 bounds), else null. */
  get mercatorExtent(): Extent | null {
    return this.mercator?.extent ?? null;
  }

  /** Image pixel under a map coordinate (null where the WebMercator mode cannot tell). */
  pixelAt(coordinate: number[]): PixelPoint | null {
    if (!this.mercator) return toPixel(coordinate);
    return this.mercator.frame?.toPixel(coordinate) ?? null;
  }

  /** Image pixels per screen pixel at the view's centre (in WebMercator mode, through the CRS). */
  private imageResolution(): number | null {
    const view = this.map.getView();
    const resolution = view.getResolution();
    if (resolution === undefined) return null;
    if (!this.mercator) return resolution;
    const { frame, image } = this.mercator;
    const center = view.getCenter();
    const at = frame && center ? frame.toPixel(center) : null;
    const size = frame ? mercatorPixelSize(frame, image, at ?? undefined) : null;
    return size !== null ? resolution / size : null;
  }

  /** Show an image in its own pixels, fitted to the map. */
  show(image: ImageDetail, options: TileOptions = {}): void {
    this.leaveMercator();
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
    this.showScaleLine(source.getProjection()?.getPointResolutionFunc() != null);
  }

  /**
   * Show a georeferenced image through its WebMercatorQuad tiles in an EPSG:3857 view, over the
   * basemap when a URL is given (an XYZ template), fitted to the map.
   */
  showMercator(image: GeoImageDetail, options: TileOptions = {}, basemapUrl: string | null = null): void {
    const bounds = image.bounds_wgs84;
    if (!bounds) throw new Error(`${image.name} has no WGS84 bounds: it cannot be shown in WebMercator`);
    this.current = image;
    const extent = boundsToMercator(bounds);
    this.mercator = { image, extent, frame: mercatorFrame(image) };
    const maxZoom = webMercatorMaxZoom(image);
    const source = new XYZ({
      url: mercatorTileTemplate(image.id, options),
      tileSize: image.tile_size,
      maxZoom,
      crossOrigin: null,
      transition: 150,
      wrapX: false,
      interpolate: true,
    });
    const view = new View({
      projection: WEB_MERCATOR,
      maxZoom: maxZoom + MERCATOR_EXTRA_ZOOM,
      showFullExtent: true,
      enableRotation: false,
    });
    this.watchTiles(source);
    // As in show(): never a frame with a source in another projection than the view's.
    this.baseLayer.setSource(null);
    this.baseLayer.setExtent(undefined);
    this.mercatorLayer.setSource(null);
    this.basemapLayer.setSource(null);
    this.map.setView(view);
    // Only tiles over the image are asked for (the server answers 404 for the others).
    this.mercatorLayer.setExtent(extent);
    this.mercatorLayer.setSource(source);
    this.setBasemap(basemapUrl);
    this.fit();
    this.showScaleLine(true);
  }

  /** The XYZ basemap under the WebMercator mode (null: none); the view stays where it is. */
  setBasemap(url: string | null): void {
    if (!this.mercator || !url) {
      this.basemapLayer.setSource(null);
      return;
    }
    // No crossOrigin: a tile server without CORS headers still draws (nothing reads its pixels).
    this.basemapLayer.setSource(new XYZ({ url, wrapX: true, transition: 0, interpolate: true }));
  }

  private leaveMercator(): void {
    this.mercator = null;
    this.mercatorLayer.setSource(null);
    this.mercatorLayer.setExtent(undefined);
    this.basemapLayer.setSource(null);
  }

  private showScaleLine(show: boolean): void {
    // Only images with a ground distance per pixel (projected, geographic, DICOM) have one.
    if (show) {
      if (!this.map.getControls().getArray().includes(this.scaleLine)) {
        this.map.addControl(this.scaleLine);
      }
    } else {
      this.map.removeControl(this.scaleLine);
    }
  }

  private watchTiles(source: TileSource | null): void {
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
    this.map.getView().fit(this.mercator ? this.mercator.extent : imageExtent(this.current), {
      padding: FIT_PADDING,
      ...(animate ? { duration: 250 } : {}),
    });
  }

  setTileOptions(options: TileOptions): void {
    if (this.mercator) {
      this.mercatorLayer.getSource()?.setUrl(mercatorTileTemplate(this.mercator.image.id, options));
      return;
    }
    this.source?.setTileOptions(options);
  }

  clear(): void {
    this.leaveMercator();
    this.current = null;
    this.watchTiles(null);
    this.baseLayer.setSource(null);
    this.map.removeControl(this.scaleLine);
  }
}

/** The server's WebMercatorQuad zoom that matches the image's resolution (else a city zoom). */
function webMercatorMaxZoom(image: ImageDetail): number {
  const zoom = image.webmercator_maxzoom;
  return typeof zoom === 'number' && Number.isFinite(zoom) ? zoom : 18;
}

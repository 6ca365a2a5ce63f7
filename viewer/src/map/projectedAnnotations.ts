/**
 * Annotations in the WebMercator mode: read-only, asked for in EPSG:3857 (`crs=EPSG:3857` on the
 * annotation routes, so the server does the reprojection from the image's CRS) for the visible
 * part of the image, and drawn in the label colours. Editing stays in the pixel mode, where the
 * stored pixel coordinates are edited as they are.
 */
import type OLMap from 'ol/Map';
import type { Extent } from 'ol/extent';
import { getIntersection, isEmpty } from 'ol/extent';
import GeoJSON from 'ol/format/GeoJSON';
import VectorLayer from 'ol/layer/Vector';
import VectorSource from 'ol/source/Vector';
import CircleStyle from 'ol/style/Circle';
import Fill from 'ol/style/Fill';
import Stroke from 'ol/style/Stroke';
import Style from 'ol/style/Style';

import { queryAnnotationsInCrs } from '../api';
import { WEB_MERCATOR } from './mercator';

export interface ProjectedAnnotationEvents {
  /** Label → CSS colour (the editor's taxonomy colours). */
  colour: (label: string) => string;
  error?: (title: string, message: string) => void;
  /** Loaded: how many are shown. */
  loaded?: (count: number) => void;
}

export class ProjectedAnnotations {
  private readonly source = new VectorSource();
  private readonly layer: VectorLayer;
  private readonly format = new GeoJSON({ dataProjection: WEB_MERCATOR, featureProjection: WEB_MERCATOR });
  private target: { imageId: string; extent: Extent } | null = null;
  private loading: AbortController | null = null;

  constructor(
    private readonly map: OLMap,
    private readonly events: ProjectedAnnotationEvents,
  ) {
    this.layer = new VectorLayer({
      source: this.source,
      style: (feature) => this.style(String(feature.get('label') ?? '')),
      properties: { role: 'annotations-webmercator' },
      zIndex: 10,
      visible: false,
    });
    map.addLayer(this.layer);
    map.on('moveend', () => void this.reload());
  }

  /** Show the annotations of an image in the WebMercator view (its EPSG:3857 extent), or none. */
  setImage(imageId: string | null, extent: Extent | null = null): void {
    this.loading?.abort();
    this.source.clear();
    this.target = imageId !== null && extent !== null ? { imageId, extent } : null;
    this.layer.setVisible(this.target !== null);
    void this.reload();
  }

  get count(): number {
    return this.source.getFeatures().length;
  }

  private async reload(): Promise<void> {
    const target = this.target;
    if (!target) return;
    const size = this.map.getSize();
    if (!size) return;
    const visible = getIntersection(this.map.getView().calculateExtent(size), target.extent);
    if (isEmpty(visible)) return;
    const [x0 = 0, y0 = 0, x1 = 0, y1 = 0] = visible;
    this.loading?.abort();
    const loading = new AbortController();
    this.loading = loading;
    try {
      const answer = await queryAnnotationsInCrs(target.imageId, WEB_MERCATOR, [x0, y0, x1, y1], loading.signal);
      if (loading.signal.aborted || this.target !== target) return;
      this.source.clear();
      this.source.addFeatures(this.format.readFeatures(answer));
      this.events.loaded?.(this.count);
    } catch (error) {
      if (loading.signal.aborted) return;
      this.events.error?.('Annotations could not be loaded', error instanceof Error ? error.message : String(error));
    }
  }

  private readonly styles = new Map<string, Style>();

  private style(label: string): Style {
    const colour = this.events.colour(label);
    const cached = this.styles.get(colour);
    if (cached) return cached;
    const stroke = new Stroke({ color: colour, width: 2 });
    const fill = new Fill({ color: withAlpha(colour, 0.18) });
    const style = new Style({ stroke, fill, image: new CircleStyle({ radius: 5, fill: new Fill({ color: colour }), stroke: new Stroke({ color: '#fff', width: 1.5 }) }) });
    this.styles.set(colour, style);
    return style;
  }
}

/** `#rrggbb` with an alpha (other CSS colours are kept as they are). */
function withAlpha(colour: string, alpha: number): string {
  const m = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(colour);
  if (!m) return colour;
  const [r, g, b] = [m[1], m[2], m[3]].map((h) => parseInt(h ?? '0', 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

/**
 * Which annotations the list shows: pure functions over GeoJSON Features, so that the panel and
 * the unit tests share them. Tags (image-level, no geometry) are left to the tags box.
 */
import type { AnnotationFeature, AnnotationStatus } from '../api';

export interface AnnotationFilter {
  /** null: any value. */
  label: string | null;
  author: string | null;
  status: AnnotationStatus | null;
}

export const NO_FILTER: AnnotationFilter = { label: null, author: null, status: null };

export const STATUSES: readonly AnnotationStatus[] = ['draft', 'submitted', 'accepted', 'rejected'];

export function isShape(feature: AnnotationFeature): boolean {
  return feature.geometry !== null && feature.properties.kind !== 'tag';
}

export function statusOf(feature: AnnotationFeature): AnnotationStatus {
  const status = feature.properties.status;
  return status && STATUSES.includes(status) ? status : 'draft';
}

export function matches(feature: AnnotationFeature, filter: AnnotationFilter): boolean {
  const p = feature.properties;
  return (
    (filter.label === null || p.label === filter.label || p.label.startsWith(`${filter.label}/`)) &&
    (filter.author === null || p.author === filter.author) &&
    (filter.status === null || statusOf(feature) === filter.status)
  );
}

/** The shapes that pass the filter, in a stable order: by slice (volumes), then by id. */
export function filterAnnotations(features: AnnotationFeature[], filter: AnnotationFilter): AnnotationFeature[] {
  return features
    .filter((f) => isShape(f) && matches(f, filter))
    .sort((a, b) => (a.properties.slice ?? 0) - (b.properties.slice ?? 0) || Number(a.id ?? 0) - Number(b.id ?? 0));
}

/** The values each filter can take among these annotations (sorted, without repeats). */
export function filterChoices(features: AnnotationFeature[]): { labels: string[]; authors: string[] } {
  const shapes = features.filter(isShape);
  const distinct = (values: (string | undefined)[]): string[] =>
    [...new Set(values.filter((v): v is string => typeof v === 'string' && v !== ''))].sort();
  return {
    labels: distinct(shapes.map((f) => f.properties.label)),
    authors: distinct(shapes.map((f) => f.properties.author)),
  };
}

/** A short description of one annotation for the list: "#12 polygon · slice 4". */
export function describe(feature: AnnotationFeature): string {
  const kind = feature.properties.kind ?? feature.geometry?.type.toLowerCase() ?? 'shape';
  const where = feature.properties.slice !== undefined ? ` · slice ${feature.properties.slice}` : '';
  return `#${String(feature.id ?? '?')} ${kind}${where}`;
}

/** Whether an annotation was drawn on this slice of this plane (always true for 2D images). */
export function onSlice(feature: AnnotationFeature, volume: { slice: number; plane: string } | null): boolean {
  if (!volume) return true;
  const p = feature.properties;
  return p.slice === volume.slice && p.plane === volume.plane;
}

/** At most this many rows are in the DOM at once (more on demand): 100,000 rows stall a page. */
export const ROW_CAP = 200;

/** Replace the annotation with the same id (a save's answer), or add it at the end. */
export function upsertFeature(features: AnnotationFeature[], stored: AnnotationFeature): AnnotationFeature[] {
  if (stored.id === undefined) return features;
  const at = features.findIndex((f) => f.id === stored.id);
  if (at < 0) return [...features, stored];
  const out = [...features];
  out[at] = stored;
  return out;
}

/** The annotations without the one of this id (deleted). */
export function withoutFeature(features: AnnotationFeature[], id: number | string): AnnotationFeature[] {
  return features.filter((f) => f.id === undefined || String(f.id) !== String(id));
}

/**
 * The list's footer: how many rows are drawn of those that pass the filter, and whether the
 * server has more pages ("Showing 200 of 1,234 · more on the server").
 */
export function listSummary(drawn: number, matching: number, moreOnServer: boolean): string {
  const n = (v: number): string => v.toLocaleString('en-US');
  const head = drawn < matching ? `Showing ${n(drawn)} of ${n(matching)}` : `${n(matching)} shown`;
  return moreOnServer ? `${head} · more on the server` : head;
}

/**
 * Which annotations the list shows: pure functions over GeoJSON Features, so that the panel and
 * the unit tests share them. The server filters the listing (see `listingFilter`); `matches`
 * tells whether a save's answer still belongs in a filtered list. Tags (image-level, no
 * geometry) are left to the tags box.
 */
import type { AnnotationFeature, AnnotationStatus, Label, ListingFilter } from '../api';

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

/** Whether an annotation passes the filter, as the server decides it (for a save's answer). */
export function matches(feature: AnnotationFeature, filter: AnnotationFilter): boolean {
  const p = feature.properties;
  return (
    (filter.label === null || p.label === filter.label || p.label.startsWith(`${filter.label}/`)) &&
    (filter.author === null || p.author === filter.author) &&
    (filter.status === null || statusOf(feature) === filter.status)
  );
}

/** The listing parameters of the list's filter (`label`, `author`, `status`; none when any). */
export function listingFilter(filter: AnnotationFilter): ListingFilter {
  return {
    ...(filter.label !== null ? { labels: [filter.label] } : {}),
    ...(filter.author !== null ? { authors: [filter.author] } : {}),
    ...(filter.status !== null ? { statuses: [filter.status] } : {}),
  };
}

/** The rows of the list: the shapes (not the tags), by slice (volumes), then by id. */
export function listedShapes(features: AnnotationFeature[]): AnnotationFeature[] {
  return features
    .filter(isShape)
    .sort((a, b) => (a.properties.slice ?? 0) - (b.properties.slice ?? 0) || Number(a.id ?? 0) - Number(b.id ?? 0));
}

/**
 * The label filter's choices: the project's labels that shapes can have (not those only for
 * tags) and the labels seen on rows (an open taxonomy may have grown since it was read); sorted,
 * so a label comes just before its sub-labels.
 */
export function labelChoices(taxonomy: readonly Label[], seen: Iterable<string>): string[] {
  const drawable = taxonomy.filter((l) => !(l.kinds && l.kinds.length > 0 && l.kinds.every((k) => k === 'tag'))).map((l) => l.name);
  return [...new Set([...drawable, ...seen].filter((v) => v !== ''))].sort();
}

/** The labels and authors of these shapes (to offer them as filter choices). */
export function seenValues(features: AnnotationFeature[]): { labels: string[]; authors: string[] } {
  const shapes = features.filter(isShape);
  const present = (values: (string | undefined)[]): string[] => values.filter((v): v is string => typeof v === 'string' && v !== '');
  return { labels: present(shapes.map((f) => f.properties.label)), authors: present(shapes.map((f) => f.properties.author)) };
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
 * The list's footer: how many rows are drawn of those loaded (every one passes the filter: the
 * server filtered them), and whether the server has more pages ("Showing 200 of 1,234 · more on
 * the server").
 */
export function listSummary(drawn: number, matching: number, moreOnServer: boolean): string {
  const n = (v: number): string => v.toLocaleString('en-US');
  const head = drawn < matching ? `Showing ${n(drawn)} of ${n(matching)}` : `${n(matching)} shown`;
  return moreOnServer ? `${head} · more on the server` : head;
}

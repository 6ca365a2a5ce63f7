/**
 * Pure logic of the Quality panel (./qualityPanel): the findings of
 * `GET /projects/{project}/checks` (see tileserver/web/checks.py), the query string of a page,
 * the map extent to zoom to for a finding, and the other annotations a finding names.
 */
import type { PlaneName } from '../api';

export type Severity = 'error' | 'warning';
export const SEVERITIES: readonly Severity[] = ['error', 'warning'];

/** Every code the checks produce (annot/checks.py), for the code filter before the counts came. */
export const CODES: readonly string[] = [
  'invalid_geometry',
  'empty_geometry',
  'outside_image',
  'partly_outside_image',
  'tiny',
  'sliver',
  'duplicate',
  'overlap',
  'unknown_label',
  'kind_not_allowed',
  'slice_mismatch',
  'slice_outside_volume',
  'sop_instance_mismatch',
  'frame_of_reference_mismatch',
  'rejected_not_revised',
];

export interface FindingLocation {
  /** `[x0, y0, x1, y1]` in pixels (column, row) of the image (of its slice and plane). */
  pixel_bbox: [number, number, number, number] | null;
  pixel_centroid: [number, number] | null;
  world_centroid?: [number, number] | [number, number, number] | null;
  world_crs?: string | null;
  slice?: number | null;
  plane?: PlaneName | null;
}

export interface Finding {
  code: string;
  severity: Severity;
  message: string;
  image: string;
  /** Null for an image-level finding. */
  annotation: number | null;
  label: string | null;
  author: string | null;
  kind: string | null;
  location: FindingLocation | null;
  details: Record<string, unknown>;
}

export interface ChecksAnswer {
  project?: string;
  images?: number;
  checked: number;
  counts: Record<string, number>;
  severities: Partial<Record<Severity, number>>;
  total: number;
  options?: Record<string, unknown>;
  findings: Finding[];
  next_cursor: string | null;
}

export interface ChecksQuery {
  image: string;
  codes?: readonly string[];
  severity?: Severity | null;
  cursor?: string | null;
  limit?: number;
}

/** The query string of one page of the checks of one image (codes repeated, not joined). */
export function checksParams(query: ChecksQuery): URLSearchParams {
  const params = new URLSearchParams({ image: query.image });
  for (const code of query.codes ?? []) params.append('code', code);
  if (query.severity) params.set('severity', query.severity);
  if (query.limit !== undefined) params.set('limit', String(query.limit));
  if (query.cursor) params.set('cursor', query.cursor);
  return params;
}

/**
 * The map extent to show for a finding: its pixel bbox (map y is the pixel row negated) with a
 * margin of `fraction` of its larger side on each side, at least `minMargin` pixels (a point or
 * a tiny shape has next to no size). Null when the finding has no usable bbox.
 */
export function findingExtent(
  finding: Pick<Finding, 'location'>,
  fraction = 0.25,
  minMargin = 16,
): [number, number, number, number] | null {
  const bbox = finding.location?.pixel_bbox;
  if (!bbox || bbox.length !== 4 || !bbox.every((v) => Number.isFinite(v))) return null;
  const [x0, y0, x1, y1] = bbox;
  const margin = Math.max(minMargin, fraction * Math.max(x1 - x0, y1 - y0));
  return [x0 - margin, -(y1 + margin), x1 + margin, -(y0 - margin)];
}

/** The other annotations a finding names: what it duplicates (and also duplicates), or overlaps. */
export function relatedIds(finding: Pick<Finding, 'code' | 'details'>): number[] {
  const d = finding.details ?? {};
  const ids: unknown[] = [];
  if (finding.code === 'duplicate') {
    ids.push(d.duplicate_of);
    if (Array.isArray(d.also_duplicates)) ids.push(...(d.also_duplicates as unknown[]));
  } else if (finding.code === 'overlap') {
    ids.push(d.other);
  }
  return [...new Set(ids.filter((v): v is number => typeof v === 'number' && Number.isFinite(v)))];
}

/** The codes to offer in the filter: those counted, the known ones, and the one chosen. */
export function codeChoices(counts: Record<string, number>, chosen: string | null): string[] {
  const out = new Set<string>([...Object.keys(counts).sort(), ...CODES]);
  if (chosen) out.add(chosen);
  return [...out];
}

/** "3 errors · 1 warning (4 of 120 annotations flagged)" style summary of an answer. */
export function countsSummary(answer: Pick<ChecksAnswer, 'severities' | 'total' | 'checked'>): string {
  const part = (n: number, one: string): string => `${n} ${one}${n === 1 ? '' : 's'}`;
  const errors = answer.severities.error ?? 0;
  const warnings = answer.severities.warning ?? 0;
  if (answer.total === 0) return `No findings (${part(answer.checked, 'annotation')} checked)`;
  return `${part(errors, 'error')} · ${part(warnings, 'warning')} (${part(answer.checked, 'annotation')} checked)`;
}

/** A stable key of a finding (one annotation may have several codes, a code several pairs). */
export function findingKey(f: Pick<Finding, 'image' | 'annotation' | 'code' | 'details'>): string {
  const other = relatedIds(f)[0];
  return `${f.image}/${f.annotation ?? '-'}/${f.code}/${other ?? ''}`;
}

/**
 * Typed access to the tile server's JSON API (/api/v1). The browser authenticates with the
 * session cookie that `/?token=…` set, so every request is same-origin with credentials.
 */
import type { ChecksAnswer } from './ui/quality';

/** One entry of `GET /api/v1/images`. */
export interface ImageSummary {
  id: string;
  name: string;
  kind: string;
  width: number;
  height: number;
  project: string;
  /** DICOM: CT, MR, ... (null for other formats). */
  modality?: string | null;
}

export interface SkippedFile {
  path: string;
  reason: string;
}

export interface ImageList {
  images: ImageSummary[];
  /** Files the server could not serve (only filled in for admins). */
  skipped: SkippedFile[];
}

export interface CrsInfo {
  wkt: string;
  epsg: number | null;
}

/**
 * Affine pixel → CRS transform `[a, b, c, d, e, f]` (GDAL/rasterio order):
 * `x = a*col + b*row + c`, `y = d*col + e*row + f`, with (col, row) measured from the top-left
 * corner of the top-left pixel.
 */
export type GeoTransform = [number, number, number, number, number, number];

/** `[west, south, east, north]` in degrees. */
export type BoundsWgs84 = [number, number, number, number];

/** `GET /api/v1/images/{id}`: the summary fields plus what drawing and tiling need. */
export interface ImageDetail {
  id: string;
  name: string;
  kind: string;
  width: number;
  height: number;
  /** Pyramid levels: z = 0 is the coarsest (fits one tile), z = levels - 1 is full resolution. */
  levels: number;
  tile_size: number;
  dtype: string;
  bands: number;
  band_names?: string[];
  default_rescale?: [number, number][];
  nodata?: number | null;
  crs?: CrsInfo | null;
  transform?: GeoTransform | null;
  bounds_wgs84?: BoundsWgs84 | null;
  /** The WebMercatorQuad zoom matching the image's resolution (georeferenced images). */
  webmercator_maxzoom?: number;
  warnings?: string[];
  /** Volumes (DICOM series): slice count, planes, window presets, patient geometry. */
  slices?: number;
  default_slice?: number;
  spacing?: [number, number, number];
  modality?: string;
  units?: string;
  acquisition_plane?: PlaneName;
  planes?: Partial<Record<PlaneName, PlaneInfo>>;
  window_presets?: WindowPreset[];
  default_window?: WindowPreset | null;
}

export type PlaneName = 'axial' | 'coronal' | 'sagittal';
export const PLANE_NAMES: readonly PlaneName[] = ['axial', 'coronal', 'sagittal'];

/** One plane of a volume: its own pixel grid and pyramid, and its patient geometry. */
export interface PlaneInfo {
  width: number;
  height: number;
  slices: number;
  levels: number;
  default_slice?: number;
  /** LPS mm of the centre of the first pixel of slice 0. */
  origin: [number, number, number];
  /** mm between columns, rows, slices. */
  spacing: [number, number, number];
  /** Rows: unit vectors along a row, along a column, along increasing slice (LPS). */
  direction: [[number, number, number], [number, number, number], [number, number, number]];
}

export interface WindowPreset {
  name: string;
  center: number;
  width: number;
  source?: string;
}

export function isVolume(image: ImageDetail): boolean {
  return typeof image.slices === 'number' && image.planes != null;
}

/** A georeferenced image: the fields that make it so are present. */
export interface GeoImageDetail extends ImageDetail {
  crs: CrsInfo;
  transform: GeoTransform;
}

export function isGeoreferenced(image: ImageDetail): image is GeoImageDetail {
  return image.crs != null && Array.isArray(image.transform) && image.transform.length === 6;
}

/** A non-2xx answer; `code` and `message` come from the server's JSON error body when present. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }

  get unauthorized(): boolean {
    return this.status === 401;
  }
}

const API_ROOT = '/api/v1';

async function errorFrom(response: Response): Promise<ApiError> {
  let code = 'http_error';
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body: unknown = await response.json();
    if (body && typeof body === 'object') {
      const { error, message: text } = body as { error?: unknown; message?: unknown };
      if (typeof error === 'string') code = error;
      if (typeof text === 'string') message = text;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

async function getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
  const response = await fetch(`${API_ROOT}${path}`, {
    credentials: 'same-origin',
    headers: { Accept: 'application/json' },
    signal: signal ?? null,
  });
  if (!response.ok) throw await errorFrom(response);
  return (await response.json()) as T;
}

export function listImages(signal?: AbortSignal): Promise<ImageList> {
  return getJson<ImageList>('/images', signal);
}

export function getImage(id: string, signal?: AbortSignal): Promise<ImageDetail> {
  return getJson<ImageDetail>(`/images/${encodeURIComponent(id)}`, signal);
}

/** `GET /api/v1/projects`: the projects the caller can see, in the server's order. */
export async function listProjects(signal?: AbortSignal): Promise<{ name: string }[]> {
  return (await getJson<{ projects: { name: string }[] }>('/projects', signal)).projects;
}

/** `GET /api/v1/config`: the server's set-up for the viewer (`tessera serve --basemap`). */
export interface ServerConfig {
  basemap: { url: string } | null;
}

export function getConfig(signal?: AbortSignal): Promise<ServerConfig> {
  return getJson<ServerConfig>('/config', signal);
}

/** The annotations in a bbox given in another CRS than pixels (EPSG:3857 for the WebMercator mode). */
export function queryAnnotationsInCrs(
  imageId: string,
  crs: string,
  bbox: [number, number, number, number],
  signal?: AbortSignal,
): Promise<AnnotationCollection> {
  const params = new URLSearchParams({ crs, bbox: bbox.map((v) => v.toFixed(3)).join(','), limit: '1000' });
  return getJson<AnnotationCollection>(`/images/${encodeURIComponent(imageId)}/annotations?${params.toString()}`, signal);
}

/** Rendering options sent as tile query parameters. */
export interface TileOptions {
  /** 1-based band numbers: one (grey) or three (r, g, b). */
  bands?: number[] | undefined;
  /** Input value range stretched to 0..255. */
  rescale?: [number, number] | undefined;
  /** Volumes: 0-based slice and plane. */
  slice?: number | undefined;
  plane?: PlaneName | undefined;
  /** Volumes: a named preset, or an explicit window width and level (centre). */
  preset?: string | undefined;
  window?: number | undefined;
  level?: number | undefined;
}

function round(value: number): string {
  return String(Math.round(value * 10) / 10);
}

export function tileQuery(options: TileOptions): string {
  // Values are plain numbers: keep the commas readable (bands=4,3,2) rather than %2C.
  const parts: string[] = [];
  if (options.bands && options.bands.length > 0) parts.push(`bands=${options.bands.join(',')}`);
  if (options.rescale) parts.push(`rescale=${options.rescale[0]},${options.rescale[1]}`);
  if (options.slice !== undefined) parts.push(`slice=${options.slice}`);
  if (options.plane !== undefined) parts.push(`plane=${options.plane}`);
  if (options.window !== undefined && options.level !== undefined) {
    parts.push(`window=${round(options.window)}`, `level=${round(options.level)}`);
  } else if (options.preset !== undefined) {
    parts.push(`preset=${encodeURIComponent(options.preset)}`);
  }
  return parts.length > 0 ? `?${parts.join('&')}` : '';
}

/** URL of one native pyramid tile. */
export function tileUrl(
  imageId: string,
  z: number,
  x: number,
  y: number,
  options: TileOptions = {},
): string {
  return `${API_ROOT}/images/${encodeURIComponent(imageId)}/tiles/${z}/${x}/${y}.png${tileQuery(options)}`;
}

/** `GET /api/v1/images/{id}/pixel`: the value under a pixel and where it is in the world. */
export interface PixelValue {
  col: number;
  row: number;
  slice?: number;
  plane?: PlaneName;
  unit?: string;
  valid: boolean;
  value: number | (number | null)[] | null;
  /** Volumes: LPS mm. */
  patient?: [number, number, number];
  /** Georeferenced: the image CRS and WGS84. */
  crs?: [number, number];
  lonlat?: [number, number];
}

export function getPixel(
  imageId: string,
  col: number,
  row: number,
  volume?: { slice: number; plane: PlaneName },
  signal?: AbortSignal,
): Promise<PixelValue> {
  const params = new URLSearchParams({ col: String(col), row: String(row) });
  if (volume) {
    params.set('slice', String(volume.slice));
    params.set('plane', volume.plane);
  }
  return getJson<PixelValue>(`/images/${encodeURIComponent(imageId)}/pixel?${params.toString()}`, signal);
}

// -- annotations ---------------------------------------------------------------------------

export interface Label {
  name: string;
  color: string | null;
  /** Annotation kinds the label may be drawn as (`tag` for image-level tags); null: any. */
  kinds?: string[] | null;
}

export interface GeoJsonGeometry {
  type: 'Point' | 'LineString' | 'Polygon' | 'MultiPolygon' | 'MultiLineString' | 'MultiPoint';
  coordinates: unknown;
}

export interface AnnotationFeature {
  type: 'Feature';
  id?: number | string;
  geometry: GeoJsonGeometry | null;
  properties: {
    label: string;
    version?: number;
    slice?: number;
    plane?: PlaneName;
    kind?: string;
    status?: AnnotationStatus;
    author?: string;
    attributes?: Record<string, unknown>;
    review?: ReviewRecord;
    [key: string]: unknown;
  };
}

export type AnnotationStatus = 'draft' | 'submitted' | 'accepted' | 'rejected';

/** `properties.review`: the latest decision on an annotation. */
export interface ReviewRecord {
  decision: 'accept' | 'reject';
  comment: string;
  reviewer: string;
  at: string;
}

export interface AnnotationCollection {
  type: 'FeatureCollection';
  features: AnnotationFeature[];
}

/** A state-changing call: cookie auth needs the CSRF header. */
async function sendJson<T>(
  method: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<T | null> {
  const response = await fetch(`${API_ROOT}${path}`, {
    method,
    signal: signal ?? null,
    credentials: 'same-origin',
    headers: {
      Accept: 'application/json',
      'X-Tessera-Request': '1',
      ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return (await response.json()) as T;
}

export async function listLabels(project: string): Promise<Label[]> {
  const answer = await getJson<{ labels: Label[] }>(`/projects/${encodeURIComponent(project)}/labels`);
  return answer.labels;
}

export function queryAnnotations(
  imageId: string,
  bbox: [number, number, number, number],
  volume?: { slice: number; plane: PlaneName },
  signal?: AbortSignal,
): Promise<AnnotationCollection> {
  const params = new URLSearchParams({ crs: 'pixel', bbox: bbox.map((v) => v.toFixed(3)).join(','), limit: '1000' });
  if (volume) {
    params.set('slice', String(volume.slice));
    params.set('plane', volume.plane);
  }
  return getJson<AnnotationCollection>(`/images/${encodeURIComponent(imageId)}/annotations?${params.toString()}`, signal);
}

export async function createAnnotation(imageId: string, feature: AnnotationFeature): Promise<AnnotationFeature> {
  const stored = await sendJson<AnnotationFeature>('POST', `/images/${encodeURIComponent(imageId)}/annotations?crs=pixel`, feature);
  return stored as AnnotationFeature;
}

/** Body of `POST /images/{id}/segment` (see tileserver/web/segment.py); pixel coordinates here. */
export interface SegmentBody {
  /** `[x, y, 1]` positive, `[x, y, 0]` negative. */
  points: [number, number, 0 | 1][];
  box?: [number, number, number, number];
  slice?: number;
  plane?: PlaneName;
  label?: string;
  bands?: number[];
  window?: number;
  level?: number;
  preset?: string;
}

/** A proposed outline (not stored): a Polygon or MultiPolygon Feature in pixel coordinates. */
export async function segmentImage(imageId: string, body: SegmentBody, signal?: AbortSignal): Promise<AnnotationFeature> {
  const answer = await sendJson<AnnotationFeature>('POST', `/images/${encodeURIComponent(imageId)}/segment?crs=pixel`, body, {}, signal);
  return answer as AnnotationFeature;
}

export async function updateAnnotation(id: number | string, version: number, feature: AnnotationFeature): Promise<AnnotationFeature> {
  const stored = await sendJson<AnnotationFeature>('PUT', `/annotations/${encodeURIComponent(String(id))}?crs=pixel`, feature, {
    'If-Match': `"${version}"`,
  });
  return stored as AnnotationFeature;
}

export async function deleteAnnotation(id: number | string, version: number): Promise<void> {
  await sendJson<null>('DELETE', `/annotations/${encodeURIComponent(String(id))}?crs=pixel`, undefined, {
    'If-Match': `"${version}"`,
  });
}

/**
 * What a listing keeps besides where annotations are, applied by the server in SQL (so pages
 * stay full and `next_cursor` stays valid): any of `labels` (a label keeps its sub-labels,
 * `vehicle` keeps `vehicle/car`), any of `statuses`, `authors` and `kinds`. Empty or absent: any.
 */
export interface ListingFilter {
  labels?: readonly string[];
  statuses?: readonly AnnotationStatus[];
  authors?: readonly string[];
  kinds?: readonly string[];
}

/** One page of a listing: where (bbox, volume slice and plane), what (filter), which page. */
export interface ListingQuery extends ListingFilter {
  cursor?: string | null;
  limit?: number;
  bbox?: [number, number, number, number];
  volume?: { slice: number; plane: PlaneName };
}

/** The query string of `GET /images/{id}/annotations` in pixel coordinates (pages of 1,000). */
export function listingParams(query: ListingQuery): URLSearchParams {
  const params = new URLSearchParams({ crs: 'pixel', limit: String(query.limit ?? 1000) });
  if (query.bbox) params.set('bbox', query.bbox.map((v) => v.toFixed(3)).join(','));
  if (query.volume) {
    params.set('slice', String(query.volume.slice));
    params.set('plane', query.volume.plane);
  }
  // Repeated, not joined by commas: a label or a user name may hold a comma.
  for (const label of query.labels ?? []) params.append('label', label);
  for (const status of query.statuses ?? []) params.append('status', status);
  for (const author of query.authors ?? []) params.append('author', author);
  for (const kind of query.kinds ?? []) params.append('kind', kind);
  if (query.cursor) params.set('cursor', query.cursor);
  return params;
}

/** One page of a listing: the features and the cursor of the next page (null: the last). */
export interface AnnotationPage {
  features: AnnotationFeature[];
  nextCursor: string | null;
}

/**
 * One page of an image's annotations (`limit`/`cursor`): all of them (tags included, every
 * slice of a volume), or those in a pixel bbox (volumes: of one slice and plane), narrowed by
 * the filter if given.
 */
export async function listAnnotationPage(imageId: string, query: ListingQuery, signal?: AbortSignal): Promise<AnnotationPage> {
  const page: AnnotationCollection & { next_cursor?: string | null } = await getJson(
    `/images/${encodeURIComponent(imageId)}/annotations?${listingParams(query).toString()}`,
    signal,
  );
  return { features: page.features, nextCursor: page.next_cursor ?? null };
}

/**
 * The annotations of an image that pass the query (tags included), page by page, at most
 * `maxPages` pages of 1000.
 */
export async function listAllAnnotations(
  imageId: string,
  query: Omit<ListingQuery, 'cursor'> = {},
  signal?: AbortSignal,
  maxPages = 20,
): Promise<AnnotationFeature[]> {
  const out: AnnotationFeature[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page: AnnotationPage = await listAnnotationPage(imageId, { ...query, cursor }, signal);
    out.push(...page.features);
    cursor = page.nextCursor;
    pages += 1;
  } while (cursor !== null && pages < maxPages);
  return out;
}

export async function getAnnotation(id: number | string): Promise<AnnotationFeature> {
  return getJson<AnnotationFeature>(`/annotations/${encodeURIComponent(String(id))}?crs=pixel`);
}

/** `POST /annotations/{id}/review`: accept or reject (reviewers), with If-Match. */
export async function reviewAnnotation(
  id: number | string,
  version: number,
  decision: 'accept' | 'reject',
  comment: string,
): Promise<AnnotationFeature> {
  const stored = await sendJson<AnnotationFeature>(
    'POST',
    `/annotations/${encodeURIComponent(String(id))}/review?crs=pixel`,
    { decision, comment },
    { 'If-Match': `"${version}"` },
  );
  return stored as AnnotationFeature;
}

export interface ProjectDetail {
  name: string;
  instructions: string;
  locked: boolean;
  labels: Label[];
  /** The caller's role in the project. */
  role: 'annotator' | 'reviewer' | 'admin';
}

export function getProject(project: string): Promise<ProjectDetail> {
  return getJson<ProjectDetail>(`/projects/${encodeURIComponent(project)}`);
}

/** Who is signed in. */
export function getSession(): Promise<{ name: string; role: string }> {
  return getJson<{ name: string; role: string }>('/session');
}

/**
 * `GET /projects/{project}/checks`: one page of the quality findings (reviewers and admins; 403
 * for annotators). `params` from `checksParams` (ui/quality).
 */
export function listChecks(project: string, params: URLSearchParams, signal?: AbortSignal): Promise<ChecksAnswer> {
  return getJson<ChecksAnswer>(`/projects/${encodeURIComponent(project)}/checks?${params.toString()}`, signal);
}

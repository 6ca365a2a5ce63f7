/**
 * Saves that could not reach the server, kept until they do: in localStorage, one key per image,
 * so a reload or a crash does not lose them. Pure apart from the storage it is given (a
 * `Storage`-like object), so the unit tests run it on a Map.
 *
 * Only failures that may pass are kept (no network, 5xx, 408, 429); a 4xx is the server saying
 * no, and is shown with its message instead. Brush saves (mask annotations, ./brushTool) are
 * kept the same way; a kept change to a mask also holds the mask it was made against, so that
 * if the mask changed meanwhile (412) the change is replayed onto the current one
 * (`sendSave`) rather than lost.
 */
import type { AnnotationFeature } from '../api';
import { ApiError, createAnnotation, deleteAnnotation, getAnnotation, updateAnnotation } from '../api';
import type { MaskJson, PixelMask } from './maskPaint';
import { decodeMask, encodeMask, isMaskJson, rebaseMask } from './maskPaint';

export type PendingOp = 'create' | 'update' | 'delete';

export interface PendingSave {
  /** Stable id of this pending change (also set on the map feature it belongs to). */
  key: string;
  imageId: string;
  op: PendingOp;
  /** update / delete: the annotation and the version the change was made against. */
  id?: number | string;
  version?: number;
  /** create / update: the Feature to send (pixel coordinates); a mask delete: its properties. */
  feature?: AnnotationFeature;
  /** A mask's update / delete: the mask at `version` on the server (what the change was made against). */
  base?: MaskJson;
  /** Why the last attempt failed. */
  error: string;
  attempts: number;
  since: string;
}

/** The part of `Storage` used (localStorage in the page, a Map in tests). */
export interface KeyValueStore {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

const PREFIX = 'tessera.pending.';

/** True when a failed save may succeed later (and so must be kept and retried). */
export function isRetryable(error: unknown): boolean {
  if (error instanceof ApiError) return error.status >= 500 || error.status === 408 || error.status === 429;
  // fetch rejects with a TypeError when the server cannot be reached at all
  return error instanceof TypeError || (error instanceof Error && error.name === 'NetworkError');
}

/** Wait before retry `attempts` (1-based): 1 s, 2 s, 4 s, ... up to 30 s. */
export function retryDelayMs(attempts: number): number {
  return Math.min(30_000, 1000 * 2 ** Math.max(0, attempts - 1));
}

export class PendingSaves {
  private counter = 0;

  constructor(private readonly storage: KeyValueStore) {}

  forImage(imageId: string): PendingSave[] {
    const text = this.storage.getItem(PREFIX + imageId);
    if (!text) return [];
    try {
      const parsed: unknown = JSON.parse(text);
      return Array.isArray(parsed) ? (parsed as PendingSave[]) : [];
    } catch {
      return [];
    }
  }

  /** Keep a pending change, or count one more failed attempt of the one with the same key. */
  put(save: Omit<PendingSave, 'key' | 'since' | 'attempts'> & Partial<Pick<PendingSave, 'key' | 'since' | 'attempts'>>): PendingSave {
    const list = this.forImage(save.imageId);
    const key = save.key ?? `${Date.now().toString(36)}-${(this.counter++).toString(36)}`;
    const old = list.find((p) => p.key === key);
    const entry: PendingSave = {
      ...save,
      key,
      attempts: old ? old.attempts + 1 : 1,
      since: old?.since ?? new Date().toISOString(),
    };
    this.write(save.imageId, [...list.filter((p) => p.key !== key), entry]);
    return entry;
  }

  remove(imageId: string, key: string): void {
    this.write(
      imageId,
      this.forImage(imageId).filter((p) => p.key !== key),
    );
  }

  get(imageId: string, key: string): PendingSave | undefined {
    return this.forImage(imageId).find((p) => p.key === key);
  }

  private write(imageId: string, list: PendingSave[]): void {
    if (list.length === 0) this.storage.removeItem(PREFIX + imageId);
    else this.storage.setItem(PREFIX + imageId, JSON.stringify(list));
  }
}

// -- sending a save (now, or a kept one again) ---------------------------------------------

/** What a save sends: a pending save without its bookkeeping. */
export type SaveRequest = Pick<PendingSave, 'imageId' | 'op' | 'id' | 'version' | 'feature' | 'base'>;

/**
 * The save that makes the server hold `mask` for a mask annotation: a create (not stored yet),
 * an update or, for an empty mask, a delete, both against `version` and carrying `saved` (the
 * mask at that version) as their base. null: nothing to send (an unsaved mask emptied).
 */
export function maskSaveRequest(
  imageId: string,
  target: { id: number | string | null; version: number; saved: PixelMask | null },
  mask: PixelMask | null,
  body: (mask: PixelMask) => AnnotationFeature,
): SaveRequest | null {
  if (target.id === null) return mask ? { imageId, op: 'create', feature: body(mask) } : null;
  const base = target.saved ? { base: encodeMask(target.saved) } : {};
  if (mask) return { imageId, op: 'update', id: target.id, version: target.version, feature: body(mask), ...base };
  const props = target.saved ? { feature: body(target.saved) } : {};
  return { imageId, op: 'delete', id: target.id, version: target.version, ...props, ...base };
}

/** The API calls a save makes (the real ones in the page, fakes in the unit tests). */
export interface SaveApi {
  create(imageId: string, feature: AnnotationFeature): Promise<AnnotationFeature>;
  update(id: number | string, version: number, feature: AnnotationFeature): Promise<AnnotationFeature>;
  remove(id: number | string, version: number): Promise<void>;
  get(id: number | string): Promise<AnnotationFeature>;
}

const SERVER: SaveApi = { create: createAnnotation, update: updateAnnotation, remove: deleteAnnotation, get: getAnnotation };

export interface SaveOutcome {
  /** The server's answer (null after a delete). */
  stored: AnnotationFeature | null;
  /**
   * `rebased`: the mask had changed meanwhile and the change was replayed onto its current
   * version; `recreated`: it had been deleted and the mask was stored as a new annotation;
   * `gone`: a delete found it deleted already.
   */
  merge: 'none' | 'rebased' | 'recreated' | 'gone';
}

/** Replays of a mask change tried when the mask keeps changing under it. */
const REPLAYS = 3;

function isStatus(error: unknown, ...statuses: number[]): boolean {
  return error instanceof ApiError && statuses.includes(error.status);
}

/**
 * Send a save. A mask's update or delete (one with a `base`) that the server refuses because
 * the mask changed (412) or went (404) meanwhile is replayed: the pixels it added to and removed
 * from its base are applied to the current mask (see `rebaseMask`), or the mask is stored anew.
 * Other failures are thrown as they came.
 */
export async function sendSave(save: SaveRequest, api: SaveApi = SERVER): Promise<SaveOutcome> {
  if (save.op === 'create') {
    if (!save.feature) throw new Error('a create without its feature');
    return { stored: await api.create(save.imageId, save.feature), merge: 'none' };
  }
  if (save.id === undefined) throw new Error(`an ${save.op} without an annotation id`);
  try {
    if (save.op === 'delete') {
      await api.remove(save.id, save.version ?? 1);
      return { stored: null, merge: 'none' };
    }
    if (!save.feature) throw new Error('an update without its feature');
    return { stored: await api.update(save.id, save.version ?? 1, save.feature), merge: 'none' };
  } catch (error) {
    if (save.base === undefined || !isStatus(error, 404, 412)) throw error;
    return replayMask(save, save.id, save.base, api, error);
  }
}

async function replayMask(save: SaveRequest, id: number | string, baseJson: MaskJson, api: SaveApi, refusal: unknown): Promise<SaveOutcome> {
  const base = decodeMask(baseJson);
  const mineJson = save.op === 'update' ? save.feature?.properties.mask : undefined;
  const mine = isMaskJson(mineJson) ? decodeMask(mineJson) : null;
  let last = refusal;
  for (let attempt = 0; attempt < REPLAYS; attempt++) {
    let current: AnnotationFeature | null = null;
    try {
      current = await api.get(id);
    } catch (error) {
      if (!isStatus(error, 404)) throw error;
    }
    if (current === null) {
      // Deleted meanwhile: what this user sees is stored as a new mask (a delete is done).
      if (!mine || !save.feature) return { stored: null, merge: 'gone' };
      return { stored: await api.create(save.imageId, save.feature), merge: 'recreated' };
    }
    const theirs = current.properties.mask;
    if (!isMaskJson(theirs)) throw refusal; // no longer a mask: nothing to replay onto
    const merged = rebaseMask(base, mine, decodeMask(theirs));
    const version = Number(current.properties.version ?? 1);
    try {
      if (merged === null) {
        await api.remove(id, version);
        return { stored: null, merge: 'rebased' };
      }
      const properties = { ...(save.feature?.properties ?? current.properties), mask: encodeMask(merged) };
      return { stored: await api.update(id, version, { type: 'Feature', geometry: null, properties }), merge: 'rebased' };
    } catch (error) {
      if (!isStatus(error, 412)) throw error;
      last = error; // changed again under us: read it again
    }
  }
  throw last;
}

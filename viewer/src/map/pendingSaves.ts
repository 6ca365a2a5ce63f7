/**
 * Saves that could not reach the server, kept until they do: in localStorage, one key per image,
 * so a reload or a crash does not lose them. Pure apart from the storage it is given (a
 * `Storage`-like object), so the unit tests run it on a Map.
 *
 * Only failures that may pass are kept (no network, 5xx, 408, 429); a 4xx is the server saying
 * no, and is shown with its message instead.
 */
import type { AnnotationFeature } from '../api';
import { ApiError } from '../api';

export type PendingOp = 'create' | 'update' | 'delete';

export interface PendingSave {
  /** Stable id of this pending change (also set on the map feature it belongs to). */
  key: string;
  imageId: string;
  op: PendingOp;
  /** update / delete: the annotation and the version the change was made against. */
  id?: number | string;
  version?: number;
  /** create / update: the Feature to send (pixel coordinates). */
  feature?: AnnotationFeature;
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

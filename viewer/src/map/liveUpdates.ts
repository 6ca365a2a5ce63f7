/**
 * Live collaboration: a WebSocket on `/api/v1/images/{id}/live` brings the changes others store
 * on the image shown; they are applied to the editor (`applyRemote` / `removeRemote`), the
 * overview tiles are refreshed, and who made the change is shown briefly.
 *
 * Echoes of our own saves come back too: the editor ignores a version it already has. An echo
 * can overtake the answer to our own POST, so changes made under our own name wait a moment
 * (`OWN_CHANGE_DELAY_MS`) before they are applied: by then the drawn shape carries its id.
 * The socket reconnects with exponential backoff; after a reconnect (changes may have been
 * missed) or a `reload` message (a bulk change) everything shown is reloaded.
 */
import type { AnnotationFeature, ImageDetail, PlaneName } from '../api';

const FIRST_RETRY_MS = 500;
const MAX_RETRY_MS = 15_000;
const OWN_CHANGE_DELAY_MS = 1000;
const TOAST_MS = 3000;
const REFRESH_MS = 300;

export interface LiveEvent {
  action: 'created' | 'updated' | 'deleted';
  id: number;
  version: number;
  /** Who made the change. */
  user: string;
  at: string;
  change: number;
  feature: AnnotationFeature | null;
}

type LiveMessage =
  | { type: 'hello'; user: string; cursor: number }
  | { type: 'changes'; cursor: number; events: LiveEvent[] }
  | { type: 'reload'; cursor: number };

/** What the feed needs from the editor and the overview. */
export interface LiveTargets {
  applyRemote(feature: AnnotationFeature): boolean;
  removeRemote(id: number | string): boolean;
  /** Reload everything shown (the editor's visible annotations). */
  reload(): void;
  /** The overview tiles changed. */
  refreshOverview(): void;
}

type Volume = { slice: number; plane: PlaneName } | null;

const VERBS: Record<LiveEvent['action'], string> = { created: 'added', updated: 'changed', deleted: 'deleted' };

export class LiveUpdates {
  private socket: WebSocket | null = null;
  private imageId: string | null = null;
  private volume: Volume = null;
  private me: string | null = null;
  private retryMs = FIRST_RETRY_MS;
  private retryTimer: number | null = null;
  private refreshTimer: number | null = null;
  private reloadPending = false;
  private toastTimer: number | null = null;
  private connectedBefore = false;
  private readonly toast: HTMLElement;

  constructor(private readonly targets: LiveTargets) {
    this.toast = document.createElement('div');
    this.toast.className = 'live-toast';
    this.toast.setAttribute('role', 'status');
    this.toast.hidden = true;
    document.body.append(this.toast);
  }

  /** Follow the changes of this image (null: none); volumes also say the slice shown. */
  setContext(image: ImageDetail | null, volume: Volume): void {
    this.volume = volume;
    const id = image?.id ?? null;
    if (id === this.imageId) return;
    this.close();
    this.imageId = id;
    this.connectedBefore = false;
    this.retryMs = FIRST_RETRY_MS;
    if (id !== null) this.connect();
  }

  private close(): void {
    if (this.retryTimer !== null) window.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const socket = this.socket;
    this.socket = null;
    socket?.close();
  }

  private connect(): void {
    const id = this.imageId;
    if (id === null) return;
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    // Same origin: the session cookie authenticates the socket.
    const socket = new WebSocket(`${scheme}//${window.location.host}/api/v1/images/${encodeURIComponent(id)}/live`);
    this.socket = socket;
    socket.addEventListener('message', (event) => {
      if (this.socket === socket && typeof event.data === 'string') this.receive(JSON.parse(event.data) as LiveMessage);
    });
    socket.addEventListener('close', () => {
      if (this.socket !== socket) return; // closed on purpose
      this.socket = null;
      this.retryTimer = window.setTimeout(() => this.connect(), this.retryMs);
      this.retryMs = Math.min(MAX_RETRY_MS, this.retryMs * 2);
    });
  }

  private receive(message: LiveMessage): void {
    if (message.type === 'hello') {
      this.me = message.user;
      this.retryMs = FIRST_RETRY_MS;
      if (this.connectedBefore) this.reloadAll(); // changes may have been missed meanwhile
      this.connectedBefore = true;
      return;
    }
    if (message.type === 'reload') {
      this.reloadAll();
      return;
    }
    for (const event of message.events) {
      if (event.user === this.me) {
        window.setTimeout(() => this.apply(event), OWN_CHANGE_DELAY_MS);
      } else {
        this.apply(event);
        this.showAuthor(event);
      }
    }
    this.scheduleRefresh();
  }

  private apply(event: LiveEvent): void {
    if (event.action === 'deleted' || !event.feature) {
      this.targets.removeRemote(event.id);
      return;
    }
    const props = event.feature.properties;
    const volume = this.volume;
    if (volume && (props.slice !== volume.slice || props.plane !== volume.plane)) {
      // Drawn on another slice or plane: it may still cross this one; the server knows.
      this.targets.removeRemote(event.id);
      this.scheduleRefresh(true);
      return;
    }
    this.targets.applyRemote(event.feature);
  }

  private reloadAll(): void {
    this.targets.reload();
    this.targets.refreshOverview();
  }

  /** Refresh the overview (and reload the editor, if any caller asked) once changes settle. */
  private scheduleRefresh(reloadToo = false): void {
    this.reloadPending ||= reloadToo; // a later call without a reload must not drop it
    if (this.refreshTimer !== null) window.clearTimeout(this.refreshTimer);
    this.refreshTimer = window.setTimeout(() => {
      this.refreshTimer = null;
      this.targets.refreshOverview();
      if (this.reloadPending) this.targets.reload();
      this.reloadPending = false;
    }, REFRESH_MS);
  }

  private showAuthor(event: LiveEvent): void {
    const kind = event.feature?.geometry?.type.replace(/^Multi/, '').toLowerCase() ?? 'annotation';
    const label = event.feature?.properties.label;
    this.toast.textContent = `${event.user} ${VERBS[event.action]} ${label ? `a ${label} ` : 'an '}${label ? kind : 'annotation'}`;
    this.toast.dataset.user = event.user;
    this.toast.hidden = false;
    if (this.toastTimer !== null) window.clearTimeout(this.toastTimer);
    this.toastTimer = window.setTimeout(() => {
      this.toast.hidden = true;
    }, TOAST_MS);
  }
}

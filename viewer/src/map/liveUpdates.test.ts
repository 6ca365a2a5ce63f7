import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import type { AnnotationFeature } from '../api';
import type { LiveEvent, LiveTargets } from './liveUpdates';
import { LiveUpdates } from './liveUpdates';

/** A stand-in for the browser's WebSocket: records what was opened, lets a test talk back. */
class FakeSocket {
  static opened: FakeSocket[] = [];
  private readonly listeners = new Map<string, ((event: { data?: unknown }) => void)[]>();
  closed = false;

  constructor(readonly url: string) {
    FakeSocket.opened.push(this);
  }

  addEventListener(type: string, listener: (event: { data?: unknown }) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.closed = true;
  }

  /** The server sends a message, or drops the connection. */
  receive(message: unknown): void {
    for (const l of this.listeners.get('message') ?? []) l({ data: JSON.stringify(message) });
  }

  drop(): void {
    for (const l of this.listeners.get('close') ?? []) l({});
  }
}

function element() {
  return { className: '', hidden: true, textContent: '', dataset: {} as Record<string, string>, setAttribute: () => {} };
}

function targets() {
  const calls: string[] = [];
  const t: LiveTargets = {
    applyRemote: (f: AnnotationFeature) => {
      calls.push(`apply ${String(f.id)} v${String(f.properties.version)}`);
      return true;
    },
    removeRemote: (id) => {
      calls.push(`remove ${String(id)}`);
      return true;
    },
    reload: () => calls.push('reload'),
    refreshOverview: () => calls.push('refresh'),
  };
  return { t, calls };
}

function event(action: LiveEvent['action'], id: number, user: string, version = 1): LiveEvent {
  const feature: AnnotationFeature | null =
    action === 'deleted'
      ? null
      : { type: 'Feature', id, geometry: { type: 'Polygon', coordinates: [] }, properties: { label: 'cell', version } };
  return { action, id, version, user, at: '', change: id, feature };
}

const IMAGE = { id: 'img' } as unknown as Parameters<LiveUpdates['setContext']>[0];

describe('LiveUpdates', () => {
  let toast: ReturnType<typeof element>;

  beforeEach(() => {
    vi.useFakeTimers();
    FakeSocket.opened = [];
    toast = element();
    vi.stubGlobal('WebSocket', FakeSocket);
    vi.stubGlobal('document', { createElement: () => toast, body: { append: () => {} } });
    vi.stubGlobal('window', {
      location: { protocol: 'http:', host: 'example:8000' },
      setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
      clearTimeout: (id: number) => clearTimeout(id),
    });
  });

  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
  });

  it('connects to the image, applies others’ changes at once and shows who made them', () => {
    const { t, calls } = targets();
    const live = new LiveUpdates(t);
    live.setContext(IMAGE, null);
    const socket = FakeSocket.opened[0];
    expect(socket?.url).toBe('ws://example:8000/api/v1/images/img/live');
    socket?.receive({ type: 'hello', user: 'alice', cursor: 0 });
    socket?.receive({ type: 'changes', cursor: 3, events: [event('created', 7, 'bob'), event('deleted', 5, 'bob')] });
    expect(calls).toEqual(['apply 7 v1', 'remove 5']);
    expect(toast.hidden).toBe(false);
    expect(toast.dataset.user).toBe('bob');
    expect(toast.textContent).toBe('bob deleted an annotation');
    vi.advanceTimersByTime(3100);
    expect(toast.hidden).toBe(true);
    expect(calls).toContain('refresh'); // the overview tiles follow
  });

  it('applies its own user’s changes only after a moment, without a toast', () => {
    const { t, calls } = targets();
    new LiveUpdates(t).setContext(IMAGE, null);
    const socket = FakeSocket.opened[0];
    socket?.receive({ type: 'hello', user: 'alice', cursor: 0 });
    socket?.receive({ type: 'changes', cursor: 1, events: [event('updated', 9, 'alice', 2)] });
    expect(calls.filter((c) => c.startsWith('apply'))).toEqual([]);
    vi.advanceTimersByTime(1000);
    expect(calls.filter((c) => c.startsWith('apply'))).toEqual(['apply 9 v2']);
    expect(toast.hidden).toBe(true);
  });

  it('reconnects with a doubling delay, reloads after a reconnect, and stops on a new image', () => {
    const { t, calls } = targets();
    const live = new LiveUpdates(t);
    live.setContext(IMAGE, null);
    FakeSocket.opened[0]?.receive({ type: 'hello', user: 'alice', cursor: 0 });
    expect(calls).toEqual([]); // the first hello: nothing was missed
    FakeSocket.opened[0]?.drop();
    vi.advanceTimersByTime(499);
    expect(FakeSocket.opened).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.opened).toHaveLength(2);
    FakeSocket.opened[1]?.drop();
    vi.advanceTimersByTime(999);
    expect(FakeSocket.opened).toHaveLength(2);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.opened).toHaveLength(3);
    FakeSocket.opened[2]?.receive({ type: 'hello', user: 'alice', cursor: 4 });
    expect(calls).toEqual(['reload', 'refresh']); // changes may have been missed meanwhile
    live.setContext(null, null);
    expect(FakeSocket.opened[2]?.closed).toBe(true);
    FakeSocket.opened[2]?.drop(); // closed on purpose: no reconnect
    vi.advanceTimersByTime(60_000);
    expect(FakeSocket.opened).toHaveLength(3);
  });

  it('on a volume, a change drawn on another slice reloads instead of adding it', () => {
    const { t, calls } = targets();
    new LiveUpdates(t).setContext(IMAGE, { slice: 4, plane: 'axial' });
    const socket = FakeSocket.opened[0];
    socket?.receive({ type: 'hello', user: 'alice', cursor: 0 });
    const elsewhere = event('created', 3, 'bob');
    if (elsewhere.feature) elsewhere.feature.properties = { label: 'cell', version: 1, slice: 5, plane: 'axial' };
    socket?.receive({ type: 'changes', cursor: 1, events: [elsewhere] });
    vi.advanceTimersByTime(400);
    expect(calls).toEqual(['remove 3', 'refresh', 'reload']);
  });
});

/**
 * The viewer page: the image list on the left, the map in the rest, a status bar below.
 * `#image=ID` in the address opens that image, so a link can point at one.
 */
import 'ol/ol.css';
import './style.css';

import type { ImageDetail, ImageSummary, TileOptions } from './api';
import { ApiError, getImage, listImages } from './api';
import { ImageViewer } from './map/ImageViewer';
import { byId, el } from './ui/dom';
import { renderImageInfo } from './ui/imageInfo';
import { ImageList } from './ui/imageList';
import { Notice } from './ui/notice';
import { RenderControls } from './ui/renderControls';
import { StatusBar } from './ui/statusBar';

function hashImageId(): string | null {
  return new URLSearchParams(window.location.hash.replace(/^#/, '')).get('image');
}

function hashFor(id: string): string {
  return `#${new URLSearchParams({ image: id }).toString()}`;
}

class App {
  private readonly mapElement = byId('map');
  private readonly notice = new Notice(byId('notice'));
  private readonly status = new StatusBar(
    byId('status-image'),
    byId('status-pixel'),
    byId('status-crs'),
    byId('status-zoom'),
  );
  private readonly tileStatus = byId('status-tiles');
  private readonly list = new ImageList(byId('image-list'), (id) => this.navigate(id), byId('image-count'));
  private readonly controls = new RenderControls(byId('render-controls'), (options) =>
    this.setTileOptions(options),
  );
  private readonly info = byId('image-info');
  private readonly viewer = new ImageViewer(this.mapElement, {
    pointer: (point) => this.status.setPointer(point),
    view: (resolution) => this.status.setResolution(resolution),
    loading: (loading) => this.mapElement.classList.toggle('is-loading', loading),
    tileErrors: (failed) => this.showTileErrors(failed),
    rendered: () => {
      this.mapElement.dataset.state = 'ready';
    },
  });

  private images: ImageSummary[] = [];
  /** Rendering options chosen per image, kept while the page lives. */
  private readonly tileOptions = new Map<string, TileOptions>();
  private loading: AbortController | null = null;

  async start(): Promise<void> {
    window.addEventListener('hashchange', () => void this.route());
    this.mapElement.dataset.state = 'loading';
    try {
      const { images, skipped } = await listImages();
      this.images = images;
      this.list.render(images);
      if (skipped.length > 0) this.showSkipped(skipped.length);
    } catch (error) {
      const signedOut = error instanceof ApiError && error.unauthorized;
      this.list.showMessage(
        signedOut ? 'Sign in to see the images.' : 'The image list could not be loaded.',
      );
      this.fail(error);
      return;
    }
    await this.route();
  }

  /** Open the image named in the address, or the first one. */
  private async route(): Promise<void> {
    const first = this.images[0];
    const id = hashImageId() ?? first?.id ?? null;
    if (id === null) {
      this.mapElement.dataset.state = 'empty';
      this.notice.show('info', 'No images', [
        'The data folders given to ',
        el('code', { text: 'tessera serve --data' }),
        ' hold no image that the server can open.',
      ]);
      return;
    }
    if (hashImageId() === null) window.history.replaceState(null, '', hashFor(id));
    await this.open(id);
  }

  private navigate(id: string): void {
    if (hashImageId() === id) return;
    window.location.hash = hashFor(id); // hashchange opens it, and Back returns
  }

  private async open(id: string): Promise<void> {
    if (this.viewer.image?.id === id) return;
    this.loading?.abort();
    const loading = new AbortController();
    this.loading = loading;
    this.list.select(id);
    this.mapElement.dataset.state = 'loading';
    let image: ImageDetail;
    try {
      image = await getImage(id, loading.signal);
    } catch (error) {
      if (loading.signal.aborted) return;
      this.fail(error, id);
      return;
    }
    if (loading.signal.aborted) return;
    this.notice.hide();
    const options = this.tileOptions.get(id) ?? {};
    this.viewer.show(image, options);
    this.status.setImage(image);
    this.controls.setImage(image, options);
    renderImageInfo(this.info, image);
    document.title = `${image.name} · Tessera`;
  }

  private setTileOptions(options: TileOptions): void {
    const image = this.viewer.image;
    if (!image) return;
    this.tileOptions.set(image.id, options);
    this.mapElement.dataset.state = 'loading';
    this.viewer.setTileOptions(options);
  }

  private showTileErrors(failed: number): void {
    this.tileStatus.hidden = failed === 0;
    this.tileStatus.textContent = failed > 0 ? `${failed} tile${failed === 1 ? '' : 's'} failed` : '';
  }

  private showSkipped(count: number): void {
    const note = byId('skipped-note');
    note.textContent = `${count} file${count === 1 ? '' : 's'} skipped (see the server log)`;
    note.hidden = false;
  }

  private fail(error: unknown, id?: string): void {
    this.mapElement.dataset.state = 'error';
    this.viewer.clear();
    this.status.setImage(null);
    this.controls.setImage(null);
    renderImageInfo(this.info, null);
    if (error instanceof ApiError && error.unauthorized) {
      document.body.classList.add('signed-out');
      this.notice.showSignIn();
    } else if (error instanceof ApiError && error.status === 404 && id !== undefined) {
      this.list.select(null);
      this.notice.show('error', 'Image not found', [`There is no image with id “${id}”.`]);
    } else {
      const message = error instanceof Error ? error.message : String(error);
      this.notice.show('error', 'The server could not answer', [message]);
    }
  }
}

void new App().start();

/**
 * The viewer page: the image list on the left, the map in the rest, a status bar below.
 * `#image=ID` in the address opens that image, so a link can point at one.
 */
import 'ol/ol.css';
import './style.css';

import type { AnnotationFeature, AnnotationPage, ImageDetail, ImageSummary, Label, ListingFilter, TileOptions } from './api';
import { ApiError, getImage, getProject, getSession, isVolume, listAllAnnotations, listAnnotationPage, listImages, listLabels } from './api';
import { getConfig, isGeoreferenced, listChecks, listProjects } from './api';
import { AnnotationEditor } from './map/annotations';
import { BrushTool } from './map/brushTool';
import { BrushControls } from './ui/brushControls';
import { AssistTool } from './map/assistTool';
import { AssistControls } from './ui/assistControls';
import { LiveUpdates } from './map/liveUpdates';
import { OverviewLayer } from './map/overviewLayer';
import { AnnotatePanel, TOOL_KEYS } from './ui/annotatePanel';
import { AnnotationList } from './ui/annotationList';
import type { ListScope } from './ui/annotationList';
import { InstructionsPanel } from './ui/instructions';
import { ReviewPanel } from './ui/reviewPanel';
import type { Finding } from './ui/quality';
import { findingExtent, relatedIds } from './ui/quality';
import { QualityPanel } from './ui/qualityPanel';
import { tagLabels, TagsBox } from './ui/tagsBox';
import { ImageViewer } from './map/ImageViewer';
import type { MapMode } from './map/ImageViewer';
import { ProjectedAnnotations } from './map/projectedAnnotations';
import { planeImage } from './map/pixelGrid';
import { byId, el } from './ui/dom';
import { renderImageInfo } from './ui/imageInfo';
import { ImageList } from './ui/imageList';
import { Notice } from './ui/notice';
import { canShowMercator, RenderControls } from './ui/renderControls';
import { StatusBar } from './ui/statusBar';
import type { VolumeState } from './ui/volumeControls';
import { initialVolumeState, VolumeControls, volumeTileOptions } from './ui/volumeControls';

/** localStorage key of the basemap URL chosen in this browser (over `serve --basemap`). */
const BASEMAP_KEY = 'tessera.basemap';

/** While right-dragging the window, re-render the tiles at most this often (ms). */
const WINDOW_DRAG_RENDER_MS = 200;

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
    byId('status-value'),
  );
  private readonly tileStatus = byId('status-tiles');
  private readonly list = new ImageList(byId('image-list'), (id) => this.navigate(id), byId('image-count'));
  private readonly controls = new RenderControls(
    byId('render-controls'),
    (options) => this.setTileOptions(options),
    (mode) => this.setMapMode(mode),
    (url) => this.setBasemap(url),
  );
  private readonly volumeControls = new VolumeControls(byId('volume-controls'), (state, planeChanged) =>
    this.setVolumeState(state, planeChanged),
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

  private readonly editor = new AnnotationEditor(this.viewer.map, {
    error: (title, message) => this.toast(title, message),
    changed: (count) => this.annotate.setCount(count),
    stored: (feature) => {
      this.annotationList.upsert(feature);
      this.quality.changed();
    },
    deleted: (id) => {
      this.annotationList.remove(id);
      this.quality.changed();
    },
    toolChanged: (tool) => {
      this.annotate.setTool(tool);
      if (tool) {
        this.brush.setMode(null);
        this.assist.setActive(false);
      }
    },
    selectionChanged: (ids) => {
      this.brush.setSelection(ids);
      this.mapElement.dataset.selected = ids.join(',');
      this.annotationList.setSelected(ids);
    },
    pendingChanged: (pending) => this.annotationList.setPending(pending),
    pendingSettled: (save, outcome) => this.brush.pendingSettled(save, outcome),
    snapChanged: (on) => this.annotate.setSnapping(on),
  });
  /** Vector tiles of the annotations while zoomed out or crowded (see map/overviewLayer). */
  private readonly overview = new OverviewLayer(this.viewer.map, this.editor, (on) => {
    this.mapElement.dataset.overview = on ? 'on' : 'off';
  });
  /** Others' changes to the image shown, as they are stored (see map/liveUpdates). */
  private readonly live = new LiveUpdates({
    applyRemote: (feature) => this.editor.applyRemote(feature),
    removeRemote: (id) => this.editor.removeRemote(id),
    reload: () => void this.editor.reload(),
    refreshOverview: () => this.overview.refresh(),
  });
  private readonly annotate = new AnnotatePanel(byId('annotate'), this.editor, () => void this.submitDrafts());
  /** Brush and eraser for mask annotations (see map/brushTool), with their own undo. */
  private readonly brush = new BrushTool(this.viewer.map, this.mapElement, {
    label: () => this.editor.label,
    colour: (label) => this.editor.colour(label),
    canReview: () => this.editor.canReview,
    error: (title, message) => this.toast(title, message),
    saved: () => {
      void this.editor.reload();
      this.annotationList.viewChanged();
      this.quality.changed();
    },
    modeChanged: (mode, radius) => {
      this.brushControls.setMode(mode, radius);
      if (mode) {
        this.editor.setTool(null);
        this.assist.setActive(false);
      }
    },
    // Failed mask saves join the editor's kept saves (listed as unsaved, retried).
    serialized: (save) => this.editor.serialized(save),
    keep: (error, save) => this.editor.keepSave(error, save),
    forget: (key) => this.editor.forgetPending(key),
  });
  private readonly brushControls = new BrushControls(byId('annotate'), this.brush);
  /** The Assist (magic wand) tool: proposed outlines from clicks or a box (see map/assistTool). */
  private readonly assist = new AssistTool(this.viewer.map, this.mapElement, {
    label: () => this.editor.label,
    imageId: () => this.volumeImage?.id ?? this.viewer.image?.id ?? null,
    view: () => {
      const image = this.volumeImage;
      if (image) {
        const state = this.volumeStates.get(image.id);
        return state ? { volume: { slice: state.slice, plane: state.plane, preset: state.preset, window: state.window, level: state.level } } : {};
      }
      const id = this.viewer.image?.id;
      return { bands: id !== undefined ? this.tileOptions.get(id)?.bands : undefined };
    },
    accept: (feature) => this.editor.addShape(feature),
    changed: (state, message) => {
      this.assistControls.setState(state, message, this.assist.hasPrompt);
      if (state === 'off') return;
      if (this.editor.activeTool !== null) this.editor.setTool(null);
      if (this.brush.activeMode !== null) this.brush.setMode(null);
    },
  });
  private readonly assistControls = new AssistControls(byId('annotate'), this.assist);
  private readonly instructions = new InstructionsPanel(byId('instructions'));
  private readonly tags = new TagsBox(
    byId('tags'),
    (title, message) => this.toast(title, message),
    () => void this.loadTags(),
  );
  private readonly annotationList = new AnnotationList(
    byId('annotation-list'),
    {
      pick: (feature) => this.showAnnotation(feature),
      retry: () => void this.editor.retryPending(),
      discard: (key) => this.editor.discardPending(key),
      fetchPage: (scope, filter, cursor, signal) => this.listPage(scope, filter, cursor, signal),
      error: (title, message) => this.toast(title, message),
    },
    (label) => this.editor.colour(label),
  );
  private readonly review = new ReviewPanel(byId('review'), {
    show: (feature) => this.showAnnotation(feature),
    decided: (stored) => {
      void this.editor.reload();
      this.annotationList.upsert(stored);
    },
    error: (title, message) => this.toast(title, message),
    fetchPage: (cursor, signal) => this.listPage('all', { statuses: ['submitted'] }, cursor, signal),
  });
  /** Automated checks of the image's annotations (reviewers and admins; see ui/qualityPanel). */
  private readonly quality = new QualityPanel(byId('quality'), {
    fetchPage: (params, signal) => listChecks(this.projectOf(this.volumeImage?.id ?? this.viewer.image?.id ?? ''), params, signal),
    show: (finding) => this.showFinding(finding),
    error: (title, message) => this.toast(title, message),
  });
  /** Who is signed in (for "my drafts"). */
  private me: string | null = null;
  private labels: Label[] = [];
  /** The list follows the view: reloaded this long after the map stops moving (ms). */
  private listTimer: number | null = null;
  private toastTimer: number | null = null;
  /** Pixels or WebMercator for georeferenced images (kept while the page lives). */
  private mapMode: MapMode = 'pixels';
  /** `tessera serve --basemap`: the XYZ URL under the WebMercator mode, or null. */
  private basemapUrl: string | null = null;
  private readonly projected = new ProjectedAnnotations(this.viewer.map, {
    colour: (label) => this.editor.colour(label),
    error: (title, message) => this.toast(title, message),
  });
  private images: ImageSummary[] = [];
  /** The volume shown (full metadata), or null for a 2D image. */
  private volumeImage: ImageDetail | null = null;
  private readonly volumeStates = new Map<string, VolumeState>();
  /** Rendering options chosen per image, kept while the page lives. */
  private readonly tileOptions = new Map<string, TileOptions>();
  private loading: AbortController | null = null;

  async start(): Promise<void> {
    this.editor.followContext((image, volume) => {
      this.brush.setContext(image, volume);
      this.assist.setContext(image);
      this.overview.setContext(image, volume);
      this.live.setContext(image, volume);
    });
    window.addEventListener('hashchange', () => void this.route());
    this.viewer.map.on('moveend', () => this.listViewChanged());
    this.wireVolumeInput();
    this.wireAnnotationKeys();
    this.mapElement.dataset.state = 'loading';
    void getSession()
      .then((session) => {
        this.me = session.name;
      })
      .catch(() => undefined);
    try {
      const { images, skipped } = await listImages();
      this.images = images;
      this.list.render(images);
      void this.loadListContext();
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
    if (isVolume(image)) {
      const state = this.volumeStates.get(id) ?? initialVolumeState(image);
      this.volumeImage = image;
      this.volumeStates.set(id, state);
      this.viewer.show(planeImage(image, state.plane), volumeTileOptions(state));
      this.status.setImage(image);
      this.updateVolumeStatus(state);
      this.controls.setImage(null);
      this.volumeControls.setImage(image, state);
      this.projected.setImage(null);
      this.editor.setContext(planeImage(image, state.plane), { slice: state.slice, plane: state.plane });
    } else {
      this.volumeImage = null;
      this.status.setImage(image);
      this.volumeControls.setImage(null);
      this.show2D(image);
    }
    this.annotate.setVisible(this.viewer.mode === 'pixels');
    void this.loadLabels(image);
    this.annotationList.open(isVolume(image));
    this.annotationList.setPending(this.editor.pending());
    this.review.reset();
    this.quality.setImage(image.id);
    renderImageInfo(this.info, image);
    document.title = `${image.name} · Tessera`;
  }

  /** A 2D image in the map mode chosen (WebMercator only for georeferenced images). */
  private show2D(image: ImageDetail): void {
    const options = this.tileOptions.get(image.id) ?? {};
    if (this.mapMode === 'webmercator' && isGeoreferenced(image) && canShowMercator(image)) {
      this.viewer.showMercator(image, options, this.basemap()?.url ?? null);
      // Editing works on the stored pixel coordinates: here the annotations are read-only,
      // asked for in EPSG:3857.
      this.editor.setContext(null, null);
      this.projected.setImage(image.id, this.viewer.mercatorExtent);
    } else {
      this.viewer.show(image, options);
      this.editor.setContext(image, null);
      this.projected.setImage(null);
    }
    this.mapElement.dataset.mode = this.viewer.mode;
    this.controls.setImage(image, options, { mode: this.viewer.mode, basemap: this.basemap() });
  }

  private setMapMode(mode: MapMode): void {
    this.mapMode = mode;
    const image = this.viewer.image;
    if (!image || this.volumeImage) return;
    this.mapElement.dataset.state = 'loading';
    this.show2D(image);
    this.annotate.setVisible(this.viewer.mode === 'pixels');
  }

  /** The basemap: this browser's choice (localStorage), else the server's, else none. */
  private basemap(): { url: string; from: 'server' | 'browser' } | null {
    let saved: string | null = null;
    try {
      saved = window.localStorage.getItem(BASEMAP_KEY);
    } catch {
      // storage disabled: the server's basemap only
    }
    if (saved) return { url: saved, from: 'browser' };
    return this.basemapUrl !== null ? { url: this.basemapUrl, from: 'server' } : null;
  }

  /** Keep a basemap URL in this browser (null: forget it) and redraw the WebMercator view. */
  private setBasemap(url: string | null): void {
    try {
      if (url === null) window.localStorage.removeItem(BASEMAP_KEY);
      else window.localStorage.setItem(BASEMAP_KEY, url);
    } catch (error) {
      this.toast('The basemap could not be saved', error instanceof Error ? error.message : String(error));
      return;
    }
    const image = this.viewer.image;
    if (!image || this.viewer.mode !== 'webmercator') return;
    this.viewer.setBasemap(this.basemap()?.url ?? null);
    this.controls.setImage(image, this.tileOptions.get(image.id) ?? {}, { mode: 'webmercator', basemap: this.basemap() });
  }

  /** The project order for the list's groups, and the basemap; the list does not wait for them. */
  private async loadListContext(): Promise<void> {
    const [projects, config] = await Promise.allSettled([listProjects(), getConfig()]);
    if (projects.status === 'fulfilled') this.list.setProjects(projects.value.map((p) => p.name));
    if (config.status === 'fulfilled') this.basemapUrl = config.value.basemap?.url ?? null;
  }

  private setTileOptions(options: TileOptions): void {
    const image = this.viewer.image;
    if (!image) return;
    this.tileOptions.set(image.id, options);
    this.mapElement.dataset.state = 'loading';
    this.viewer.setTileOptions(options);
  }

  private setVolumeState(state: VolumeState, planeChanged: boolean): void {
    const image = this.volumeImage;
    if (!image) return;
    this.volumeStates.set(image.id, state);
    this.mapElement.dataset.state = 'loading';
    if (planeChanged) {
      this.viewer.show(planeImage(image, state.plane), volumeTileOptions(state));
    } else {
      this.viewer.setTileOptions(volumeTileOptions(state));
    }
    this.updateVolumeStatus(state);
    this.editor.setContext(planeImage(image, state.plane), { slice: state.slice, plane: state.plane });
    this.listViewChanged();
  }

  /** The project of an image (from the image list). */
  private projectOf(id: string): string {
    return this.images.find((i) => i.id === id)?.project ?? 'default';
  }

  private async loadLabels(image: ImageDetail): Promise<void> {
    const project = this.projectOf(image.id);
    try {
      const labels = await listLabels(project);
      this.labels = labels;
      this.editor.setLabels(labels);
      this.annotate.setLabels(labels);
      this.annotationList.setLabels(labels);
      void this.loadTags();
    } catch (error) {
      this.toast('Labels could not be loaded', error instanceof Error ? error.message : String(error));
    }
    try {
      const detail = await getProject(project);
      const reviewer = detail.role === 'reviewer' || detail.role === 'admin';
      this.editor.canReview = reviewer;
      this.review.setAllowed(reviewer);
      this.quality.setAllowed(reviewer);
      this.instructions.setInstructions(detail.instructions);
    } catch (error) {
      this.toast('The project could not be loaded', error instanceof Error ? error.message : String(error));
    }
  }

  /** The map moved or the slice changed: the list of what is in view follows (soon). */
  private listViewChanged(): void {
    if (this.listTimer !== null) window.clearTimeout(this.listTimer);
    this.listTimer = window.setTimeout(() => {
      this.listTimer = null;
      this.annotationList.viewChanged();
    }, 250);
  }

  /**
   * One page for the list or the review queue, of the annotations that pass `filter` (the
   * server filters): `view` is a bbox query of the visible part of the image (volumes: of the
   * slice shown), as the editor asks for its shapes; `all` pages through the whole image (every
   * slice). In the WebMercator mode `view` is the whole image.
   */
  private listPage(scope: ListScope, filter: ListingFilter, cursor: string | null, signal: AbortSignal): Promise<AnnotationPage> {
    const image = this.viewer.image;
    if (!image) return Promise.resolve({ features: [], nextCursor: null });
    const id = this.volumeImage?.id ?? image.id;
    if (scope === 'all' || this.viewer.mode !== 'pixels') return listAnnotationPage(id, { ...filter, cursor }, signal);
    const state = this.volumeImage ? this.volumeStates.get(id) : undefined;
    const volume = state ? { slice: state.slice, plane: state.plane } : undefined;
    const [x0 = 0, y0 = 0, x1 = 0, y1 = 0] = this.viewer.map.getView().calculateExtent(this.viewer.map.getSize());
    // Map y is the pixel row negated (see map/annotations).
    const bbox: [number, number, number, number] = [
      Math.max(0, x0),
      Math.max(0, -y1),
      Math.min(image.width, x1),
      Math.min(image.height, -y0),
    ];
    if (!(bbox[2] > bbox[0] && bbox[3] > bbox[1])) return Promise.resolve({ features: [], nextCursor: null });
    return listAnnotationPage(id, { ...filter, cursor, bbox, ...(volume ? { volume } : {}) }, signal);
  }

  /** The image's tags for the tags box (`kind=tag`): only when the project has tag labels at all. */
  private async loadTags(): Promise<void> {
    const image = this.viewer.image;
    if (!image) return;
    const id = this.volumeImage?.id ?? image.id;
    if (tagLabels(this.labels).length === 0) {
      this.tags.show(id, this.labels, []);
      return;
    }
    try {
      const all = await listAllAnnotations(id, { kinds: ['tag'] });
      if ((this.volumeImage?.id ?? this.viewer.image?.id) !== id) return;
      this.tags.show(id, this.labels, all);
    } catch (error) {
      this.toast('Tags could not be listed', error instanceof Error ? error.message : String(error));
    }
  }

  /** Go to an annotation: its plane and slice on a volume, then zoom to it and select it. */
  private showAnnotation(feature: AnnotationFeature): void {
    // The editor zooms to and selects the shape in pixel coordinates: leave the WebMercator mode.
    if (this.viewer.mode === 'webmercator') this.setMapMode('pixels');
    const { slice, plane } = feature.properties;
    if (this.volumeImage && slice !== undefined && plane !== undefined) {
      this.volumeControls.setPlane(plane);
      this.volumeControls.setSlice(slice);
    }
    this.mapElement.dataset.highlighted = '';
    this.editor.showAnnotation(feature);
  }

  /**
   * Go to a quality finding: its plane and slice on a volume, then zoom to its pixel bbox (with a
   * margin) and select its annotation; a duplicate's or overlap's other annotation is outlined.
   */
  private showFinding(finding: Finding): void {
    const extent = findingExtent(finding);
    if (!extent) return;
    if (this.viewer.mode === 'webmercator') this.setMapMode('pixels');
    const slice = finding.location?.slice;
    const plane = finding.location?.plane;
    if (this.volumeImage && typeof slice === 'number' && plane) {
      this.volumeControls.setPlane(plane);
      this.volumeControls.setSlice(slice);
    }
    const related = relatedIds(finding);
    this.mapElement.dataset.highlighted = related.join(',');
    this.editor.showExtent(extent, finding.annotation, related);
  }

  /** Submit the signed-in user's drafts on this image for review. */
  private async submitDrafts(): Promise<void> {
    const image = this.viewer.image;
    if (!image) return;
    const me = this.me;
    if (me === null) {
      this.toast('Nothing to submit', 'Who is signed in is not known yet; try again in a moment.');
      return;
    }
    let drafts: AnnotationFeature[];
    try {
      // Every page of this user's drafts: they may lie anywhere in the image (the save answers
      // update the list).
      drafts = await listAllAnnotations(this.volumeImage?.id ?? image.id, { statuses: ['draft'], authors: [me] }, undefined, Infinity);
    } catch (error) {
      this.toast('Your drafts could not be listed', error instanceof Error ? error.message : String(error));
      return;
    }
    const mine = drafts.filter((a) => a.geometry !== null); // tags are not reviewed
    if (mine.length === 0) {
      this.toast('Nothing to submit', 'You have no draft annotations on this image.');
      return;
    }
    const done = await this.editor.setStatus(mine, 'submitted');
    this.toast('Submitted for review', `${done} of ${mine.length} draft${mine.length === 1 ? '' : 's'} submitted.`);
  }

  private toast(title: string, message: string): void {
    const toast = byId('toast');
    toast.replaceChildren(el('strong', { text: title }), message);
    toast.hidden = false;
    if (this.toastTimer !== null) window.clearTimeout(this.toastTimer);
    this.toastTimer = window.setTimeout(() => {
      toast.hidden = true;
    }, 8000);
  }

  /**
   * P/F/B/O/L/H pick a tool, K/E the mask brush/eraser ([ and ] size it), W the Assist tool
   * (Enter accepts its proposal, Esc clears its prompt), S toggles snapping,
   * Esc cancels, Delete removes the selection,
   * Ctrl+Z undoes, Ctrl+Shift+Z / Ctrl+Y redo; in review mode N / Shift+N step, A / R decide;
   * Q opens or closes the Quality panel (reviewers and admins).
   */
  private wireAnnotationKeys(): void {
    window.addEventListener('keydown', (event) => {
      if (!this.viewer.image) return;
      const target = event.target;
      if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement || target instanceof HTMLTextAreaElement) return;
      const key = event.key.toLowerCase();
      // While the brush or eraser is on, undo and redo go to its strokes.
      const strokes = this.brush.activeMode !== null;
      if ((event.ctrlKey || event.metaKey) && (key === 'y' || (key === 'z' && event.shiftKey))) {
        event.preventDefault();
        void (strokes ? this.brush.redo() : this.editor.redo());
        return;
      }
      if ((event.ctrlKey || event.metaKey) && key === 'z') {
        event.preventDefault();
        void (strokes ? this.brush.undo() : this.editor.undo());
        return;
      }
      if (event.ctrlKey || event.metaKey || event.altKey) return;
      if (this.review.isActive && (key === 'n' || key === 'a' || key === 'r')) {
        if (key === 'n') this.review.step(event.shiftKey ? -1 : 1);
        else void this.review.decide(key === 'a' ? 'accept' : 'reject');
        return;
      }
      const tool = TOOL_KEYS[key];
      if (key === 'q') {
        if (this.quality.isAllowed) this.quality.setOpen(!this.quality.isOpen);
      } else if (key === 'w') {
        this.assist.setActive(!this.assist.active);
      } else if (event.key === 'Enter' && this.assist.active) {
        event.preventDefault();
        this.assist.accept();
      } else if (event.key === 'Escape' && this.assist.active) {
        if (this.assist.hasPrompt) this.assist.clear();
        else this.assist.setActive(false);
      } else if (key === 'k' || key === 'e') {
        const mode = key === 'k' ? 'brush' : 'eraser';
        this.brush.setMode(this.brush.activeMode === mode ? null : mode);
      } else if ((key === '[' || key === ']') && this.brush.activeMode) {
        this.brush.resize(key === ']');
      } else if (event.key === 'Escape' && this.brush.activeMode) {
        this.brush.setMode(null);
      } else if (key === 's') {
        this.editor.setSnapping(!this.editor.snapping);
      } else if (tool) {
        this.editor.setTool(this.editor.activeTool === tool ? null : tool);
      } else if (event.key === 'Escape') {
        this.editor.cancel();
      } else if (event.key === 'Delete' || event.key === 'Backspace') {
        void this.editor.deleteSelected();
      }
    });
  }

  private updateVolumeStatus(state: VolumeState): void {
    const image = this.volumeImage;
    const info = image?.planes?.[state.plane];
    if (!image || !info) return;
    this.status.setVolume(state.plane, info, state.slice);
    this.mapElement.dataset.plane = state.plane;
    this.mapElement.dataset.slice = String(state.slice);
  }

  /** Slices by keys and modified wheel; window/level by right-drag. Only while a volume is shown. */
  private wireVolumeInput(): void {
    const map = this.mapElement;
    const editable = (target: EventTarget | null): boolean =>
      target instanceof HTMLInputElement ||
      target instanceof HTMLSelectElement ||
      target instanceof HTMLTextAreaElement;
    window.addEventListener(
      'keydown',
      (event) => {
        if (!this.volumeImage || editable(event.target) || event.altKey || event.metaKey) return;
        const steps: Record<string, number> = { PageUp: 1, PageDown: -1, ArrowUp: 1, ArrowDown: -1 };
        const step = steps[event.key];
        if (step === undefined) return;
        // Before OpenLayers' keyboard pan, which would move the view on the arrows.
        event.preventDefault();
        event.stopImmediatePropagation();
        this.volumeControls.stepSlice(event.shiftKey ? step * 10 : step);
      },
      { capture: true },
    );
    map.addEventListener(
      'wheel',
      (event) => {
        if (!this.volumeImage || !(event.shiftKey || event.ctrlKey)) return;
        // Capture phase on the map element: OpenLayers' wheel zoom never sees it.
        event.preventDefault();
        event.stopPropagation();
        const delta = event.deltaY !== 0 ? event.deltaY : event.deltaX;
        if (delta !== 0) this.volumeControls.stepSlice(delta < 0 ? 1 : -1);
      },
      { capture: true, passive: false },
    );
    map.addEventListener('contextmenu', (event) => {
      if (this.volumeImage) event.preventDefault();
    });
    map.addEventListener(
      'pointerdown',
      (event) => {
        if (!this.volumeImage || event.button !== 2) return;
        const start = this.volumeControls.current;
        if (!start) return;
        event.preventDefault();
        event.stopPropagation();
        const [x0, y0] = [event.clientX, event.clientY];
        let lastRender = performance.now();
        map.classList.add('is-windowing');
        const windowAt = (e: PointerEvent): [number, number] => [
          // Right widens the window (exponentially: the same feel at W 80 and W 2000); down
          // raises the level by a fraction of the starting width.
          start.window * Math.exp((e.clientX - x0) / 200),
          start.level + ((e.clientY - y0) * start.window) / 400,
        ];
        const move = (e: PointerEvent): void => {
          const [w, l] = windowAt(e);
          const now = performance.now();
          const render = now - lastRender > WINDOW_DRAG_RENDER_MS;
          if (render) lastRender = now;
          this.volumeControls.setWindow(w, l, render);
        };
        const up = (e: PointerEvent): void => {
          window.removeEventListener('pointermove', move, true);
          window.removeEventListener('pointerup', up, true);
          map.classList.remove('is-windowing');
          const [w, l] = windowAt(e);
          this.volumeControls.setWindow(w, l, true);
        };
        window.addEventListener('pointermove', move, true);
        window.addEventListener('pointerup', up, true);
      },
      { capture: true },
    );
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
    this.volumeControls.setImage(null);
    this.volumeImage = null;
    this.editor.setContext(null, null);
    this.projected.setImage(null);
    this.annotate.setVisible(false);
    this.annotationList.hide();
    this.tags.hide();
    this.review.setAllowed(false);
    this.quality.setAllowed(false);
    this.quality.setImage(null);
    this.instructions.setVisible(false);
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

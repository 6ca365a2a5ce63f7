/** A map button that zooms to the whole image, the same way the viewer fits a new image. */
import ZoomToExtent from 'ol/control/ZoomToExtent';

export class FitControl extends ZoomToExtent {
  private readonly onFit: () => void;

  constructor(onFit: () => void) {
    super({ label: '⤢', tipLabel: 'Fit the image (F)' });
    this.onFit = onFit;
  }

  protected override handleZoomToExtent(): void {
    this.onFit();
  }
}

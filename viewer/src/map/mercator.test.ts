import { describe, expect, it } from 'vitest';

import type { GeoImageDetail } from '../api';
import { basemapUrlProblem, boundsToMercator, lonLatToMercator, mercatorFrame, mercatorPixelSize, mercatorTileTemplate, mercatorToLonLat } from './mercator';

// rasterio's WKT of EPSG:32618; the expected EPSG:3857 positions below come from pyproj
// (PROJ), a reader independent of proj4js.
const UTM_18N =
  'PROJCS["WGS 84 / UTM zone 18N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,' +
  'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],' +
  'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]],' +
  'PROJECTION["Transverse_Mercator"],PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",-75],' +
  'PARAMETER["scale_factor",0.9996],PARAMETER["false_easting",500000],PARAMETER["false_northing",0],' +
  'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["Easting",EAST],AXIS["Northing",NORTH],AUTHORITY["EPSG","32618"]]';

function image(wkt: string, epsg: number, transform: GeoImageDetail['transform']): GeoImageDetail {
  return {
    id: 'g',
    name: 'g.tif',
    kind: 'geotiff',
    width: 600,
    height: 400,
    levels: 3,
    tile_size: 256,
    dtype: 'uint8',
    bands: 3,
    crs: { wkt, epsg },
    transform,
  };
}

describe('mercatorTileTemplate', () => {
  it('is the WebMercatorQuad route with the rendering options', () => {
    expect(mercatorTileTemplate('a utm')).toBe('/api/v1/images/a%20utm/tiles/WebMercatorQuad/{z}/{x}/{y}.png');
    expect(mercatorTileTemplate('a', { bands: [3, 2, 1] })).toBe(
      '/api/v1/images/a/tiles/WebMercatorQuad/{z}/{x}/{y}.png?bands=3,2,1',
    );
  });
});

describe('spherical Mercator', () => {
  it('matches EPSG:3857', () => {
    const [x, y] = lonLatToMercator(-97.485, 32.8217);
    expect(x).toBeCloseTo(-10_851_980.559982274, 5);
    expect(y).toBeCloseTo(3_871_661.4639867735, 5);
    expect(lonLatToMercator(180, 0)[0]).toBeCloseTo(20_037_508.342789244, 5);
    const [lon, lat] = mercatorToLonLat(x, y);
    expect(lon).toBeCloseTo(-97.485, 10);
    expect(lat).toBeCloseTo(32.8217, 10);
  });

  it('turns WGS84 bounds into an EPSG:3857 extent', () => {
    const extent = boundsToMercator([-97.485, 32.5225, -97.1792, 32.8217]);
    expect(extent[0]).toBeCloseTo(-10_851_980.56, 1);
    expect(extent[3]).toBeCloseTo(3_871_661.46, 1);
  });
});

describe('mercatorFrame', () => {
  it('maps UTM pixels to EPSG:3857 and back (proj4 from the WKT)', () => {
    const utm = image(UTM_18N, 32618, [0.5, 0, 500_000, 0, -0.5, 4_400_000]);
    const frame = mercatorFrame(utm)!;
    const corner = frame.toMercator({ col: 0, row: 0 })!;
    expect(corner[0]).toBeCloseTo(-8_348_961.809495518, 3);
    expect(corner[1]).toBeCloseTo(4_829_665.799611477, 3);
    const far = frame.toMercator({ col: 600, row: 400 })!;
    expect(far[0]).toBeCloseTo(-8_348_572.001347056, 3);
    expect(far[1]).toBeCloseTo(4_829_404.881148872, 3);
    const back = frame.toPixel(far)!;
    expect(back.col).toBeCloseTo(600, 6);
    expect(back.row).toBeCloseTo(400, 6);
    // Half-metre pixels are ~0.65 m of EPSG:3857 at 39.7 N (1 / cos(latitude), and UTM's 0.9996).
    const size = mercatorPixelSize(frame, utm)!;
    expect(size).toBeGreaterThan(0.64);
    expect(size).toBeLessThan(0.66);
  });

  it('maps EPSG:4326 pixels without proj4', () => {
    const res = 0.000833333;
    const geographic = image('GEOGCS["WGS 84"]', 4326, [res, 0, -97.485, 0, -res, 32.8217]);
    const frame = mercatorFrame(geographic)!;
    const corner = frame.toMercator({ col: 0, row: 0 })!;
    expect(corner[0]).toBeCloseTo(-10_851_980.559982274, 4);
    expect(corner[1]).toBeCloseTo(3_871_661.4639867735, 4);
    const back = frame.toPixel(corner)!;
    expect(back.col).toBeCloseTo(0, 6);
    expect(back.row).toBeCloseTo(0, 6);
  });

  it('is null for a CRS proj4 cannot read', () => {
    expect(mercatorFrame(image('NOT A CRS', 0, [1, 0, 0, 0, -1, 0]))).toBeNull();
  });
});

describe('basemapUrlProblem', () => {
  it('accepts XYZ templates on http(s) or this server', () => {
    expect(basemapUrlProblem('https://tile.example.org/{z}/{x}/{y}.png')).toBeNull();
    expect(basemapUrlProblem(' http://127.0.0.1:8080/{z}/{x}/{-y}.jpg ')).toBeNull();
    expect(basemapUrlProblem('/api/v1/images/w/tiles/WebMercatorQuad/{z}/{x}/{y}.png')).toBeNull();
  });

  it('says what is wrong', () => {
    expect(basemapUrlProblem('')).toBe('Give a URL.');
    expect(basemapUrlProblem('ftp://t.example/{z}/{x}/{y}')).toBe('Start with http://, https:// or /.');
    expect(basemapUrlProblem('https://t.example/{z}/{x}.png')).toBe('Missing {y}.');
    expect(basemapUrlProblem('https://t.example/tiles.png')).toBe('Missing {z}, {x}, {y}.');
  });
});

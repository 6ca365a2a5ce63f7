import { describe, expect, it } from 'vitest';

import type { ImageDetail } from '../api';
import { crsLabel, crsToPixel, isGeographic, metresAlongRow, metresPerDegree, pixelToCrs } from './georef';

const UTM_WKT =
  'PROJCS["WGS 84 / UTM zone 18N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],' +
  'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],' +
  'PARAMETER["central_meridian",-75],PARAMETER["scale_factor",0.9996],UNIT["metre",1],AUTHORITY["EPSG","32618"]]';
const WGS84_WKT =
  'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],' +
  'UNIT["degree",0.0174532925199433],AUTHORITY["EPSG","4326"]]';

function geoImage(wkt: string, epsg: number, transform: ImageDetail['transform'], width = 600, height = 400): ImageDetail {
  return {
    id: 'g',
    name: 'g.tif',
    kind: 'geotiff',
    width,
    height,
    levels: 3,
    tile_size: 256,
    dtype: 'uint8',
    bands: 3,
    crs: { wkt, epsg },
    transform,
  };
}

describe('pixel <-> CRS', () => {
  const transform: ImageDetail['transform'] = [0.5, 0, 500_000, 0, -0.5, 4_400_000];

  it('applies the affine transform from the top-left corner of the top-left pixel', () => {
    expect(pixelToCrs(transform!, { col: 0, row: 0 })).toEqual([500_000, 4_400_000]);
    expect(pixelToCrs(transform!, { col: 100, row: 50 })).toEqual([500_050, 4_399_975]);
  });

  it('inverts it, and gives up on a degenerate transform', () => {
    const back = crsToPixel(transform!, 500_050, 4_399_975);
    expect(back!.col).toBeCloseTo(100, 9);
    expect(back!.row).toBeCloseTo(50, 9);
    expect(crsToPixel([0, 0, 1, 0, 0, 1], 3, 4)).toBeNull();
  });

  it('names the CRS by its EPSG code or its WKT name', () => {
    expect(crsLabel({ wkt: UTM_WKT, epsg: 32618 })).toBe('EPSG:32618');
    expect(crsLabel({ wkt: 'PROJCS["Local grid",GEOGCS["x"]]', epsg: null })).toBe('Local grid');
    expect(isGeographic({ wkt: WGS84_WKT, epsg: 4326 })).toBe(true);
    expect(isGeographic({ wkt: UTM_WKT, epsg: 32618 })).toBe(false);
  });
});

describe('metresPerDegree', () => {
  // Reference values of the WGS84 ellipsoid (e.g. the NGA/NIMA "length of a degree" tables).
  it('matches the WGS84 lengths of a degree', () => {
    expect(metresPerDegree(0).lon).toBeCloseTo(111_319.49, 1);
    expect(metresPerDegree(0).lat).toBeCloseTo(110_574.27, 0);
    expect(metresPerDegree(45).lon).toBeCloseTo(78_846.81, 0);
    expect(metresPerDegree(45).lat).toBeCloseTo(111_131.75, 0);
    expect(metresPerDegree(90).lon).toBeCloseTo(0, 6);
  });
});

describe('metresAlongRow', () => {
  it('is the pixel width for a projected CRS in metres', () => {
    expect(metresAlongRow(geoImage(UTM_WKT, 32618, [0.5, 0, 500_000, 0, -0.5, 4_400_000]))).toBe(0.5);
  });

  it('converts degrees at the latitude asked for (the image centre by default)', () => {
    // 3 arc-second pixels from 32.8217 N down 359 rows: the centre is at 32.6721 N.
    const res = 0.000833333;
    const image = geoImage(WGS84_WKT, 4326, [res, 0, -97.485, 0, -res, 32.8217], 367, 359);
    const centreLat = 32.8217 - (359 / 2) * res;
    expect(metresAlongRow(image)).toBeCloseTo(res * metresPerDegree(centreLat).lon, 9);
    // about 78 m, less than a degree of latitude would give (92.4 m)
    expect(metresAlongRow(image)).toBeGreaterThan(77.9);
    expect(metresAlongRow(image)).toBeLessThan(78.2);
    const top = metresAlongRow(image, { col: 0, row: 0 })!;
    expect(top).toBeCloseTo(res * metresPerDegree(32.8217).lon, 9);
  });

  it('uses the column spacing of the plane shown for volumes (mm)', () => {
    const coronal = { ...geoImage('', 0, null), crs: null, spacing: [0.7, 2.5, 0.7], planes: {} } as ImageDetail;
    expect(metresAlongRow(coronal)).toBeCloseTo(0.0007, 12);
  });

  it('is null without a ground unit', () => {
    const plain = { ...geoImage('', 0, null), crs: null };
    expect(metresAlongRow(plain)).toBeNull();
    const feet = UTM_WKT.replace('UNIT["metre",1]', 'UNIT["US survey foot",0.3048006096012192]');
    expect(metresAlongRow(geoImage(feet, 2263, [1, 0, 0, 0, -1, 0]))).toBeNull();
  });
});

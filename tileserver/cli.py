"""The ``tessera`` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from annot.errors import AnnotError
from annot.storage import open_store
from annot.users import Role
from tileserver.errors import TileServerError
from tileserver.formats import EXPORTS, IMPORTS
from tileserver.server import ServeConfig, default_db_url, serve, state_dir
from tileserver.web.config import check_basemap_url

DEFAULT_DEMO_DIR = Path("tessera-demo")


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        help="sqlite:///PATH (default: .tessera/tessera.db in the first "
        "data folder) or postgresql://USER@HOST/DB (PostGIS)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument(
        "--workers", type=int, default=1, help="processes, each with its own SO_REUSEPORT socket"
    )
    p.add_argument(
        "--tile-cache",
        type=int,
        default=256,
        metavar="MB",
        help="rendered-tile cache per worker in MB; 0 turns it off",
    )
    p.add_argument(
        "--basemap",
        type=_basemap_url,
        metavar="URL",
        help="XYZ tile URL template (https://host/{z}/{x}/{y}.png) shown under georeferenced "
        "images in the viewer's WebMercator mode; none by default",
    )


def _basemap_url(text: str) -> str:
    try:
        return check_basemap_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tessera", description="Tessera annotation server")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve every image below the data folders")
    p.add_argument("--data", action="append", required=True, type=Path, metavar="DIR")
    _serve_args(p)

    p = sub.add_parser("demo", help="generate the demo data set and serve it")
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DEMO_DIR,
        help="where to put the demo data (default: ./tessera-demo)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    _serve_args(p)

    p = sub.add_parser("user", help="manage users")
    usub = p.add_subparsers(dest="user_command", required=True)
    p = usub.add_parser("add", help="create a user (or renew its token) and print its token")
    p.add_argument("name")
    p.add_argument("--role", choices=[r.value for r in Role], default=Role.annotator.value)
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help="the first data folder of 'serve' (finds its database)",
    )
    p.add_argument("--db", help="database URL, as for 'serve'")

    p = sub.add_parser("export", help="write an image's annotations to a file")
    p.add_argument("--image", required=True, metavar="ID", help="the image id (as in the API)")
    p.add_argument("--format", required=True, choices=list(EXPORTS))
    p.add_argument("-o", "--output", required=True, type=Path, metavar="PATH")
    p.add_argument(
        "--segmentation",
        choices=["polygon", "rle"],
        default="polygon",
        help="COCO: polygons as COCO polygons (default) or rasterised RLE",
    )
    p.add_argument(
        "--crs",
        help="world (WGS84; geojson's default), image (gpkg's and fgb's default), EPSG:n or pixel",
    )
    p.add_argument(
        "--seg-type", choices=["binary", "fractional"], help="DICOM-SEG: segmentation type"
    )
    p.add_argument(
        "--volume",
        choices=["both", "image", "labels"],
        help="NIfTI: a ZIP of both (default) or one .nii.gz of the image or the labels",
    )
    p.add_argument("--labels", help="comma-separated labels (with their sub-labels)")
    p.add_argument("--status", help="comma-separated statuses (draft, submitted, ...)")
    _chips_args(p.add_argument_group("format=chips (training chips of a 2D image)"))
    _store_args(p)

    p = sub.add_parser("import", help="import annotations from a file onto an image")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--image", required=True, metavar="ID", help="the image id (as in the API)")
    p.add_argument("--format", required=True, choices=list(IMPORTS))
    p.add_argument(
        "--crs", help="the file's CRS (EPSG:n or pixel); default: the one it names, else WGS84"
    )
    p.add_argument("--label", help="the label of features without properties.label")
    p.add_argument("--user", default="admin", help="the author to record (default: admin)")
    p.add_argument("--dry-run", action="store_true", help="report, store nothing")
    _store_args(p)
    return parser


def _chips_args(g: argparse._ArgumentGroup) -> None:
    """Flags named as the chips export's HTTP options (``chip_format`` is --chip-format)."""
    g.add_argument("--size", type=int, help="chip side in pixels (default 512)")
    g.add_argument(
        "--resolution",
        type=float,
        help="chip pixel size in the image's CRS units (metres when projected); default full",
    )
    g.add_argument(
        "--level", type=int, help="or the file's pyramid level N (0: full; else 2**N smaller)"
    )
    g.add_argument("--overlap", type=int, help="pixels shared by neighbouring chips (default 0)")
    g.add_argument("--mode", choices=["annotated", "grid"], help="default annotated")
    g.add_argument("--chip-format", choices=["geotiff", "png"], help="default geotiff")
    g.add_argument("--split", metavar="TRAIN,VAL,TEST", help="fractions (default 0.8,0.1,0.1)")
    g.add_argument("--split-by", choices=["area", "image"], help="default area")
    g.add_argument("--seed", type=int, help="seed of the split hash (default 0)")
    g.add_argument("--cell", type=float, help="split_by=area cell side (default 4 chips)")
    g.add_argument("--bands", help="1-based bands to keep, e.g. 3,2,1 (default all)")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        action="append",
        required=True,
        type=Path,
        metavar="DIR",
        help="the data folders of 'serve' (finds the image and, without --db, the database)",
    )
    p.add_argument("--db", help="database URL, as for 'serve'")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            serve(
                ServeConfig(
                    data=args.data,
                    db=args.db,
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    tile_cache_mb=args.tile_cache,
                    basemap=args.basemap,
                )
            )
        elif args.command == "demo":
            from tileserver.demo import make_demo

            print(f"Preparing demo data in {args.dir.resolve()} ...", flush=True)
            folder = make_demo(args.dir)
            serve(
                ServeConfig(
                    data=[folder],
                    db=args.db,
                    host=args.host,
                    port=args.port,
                    workers=args.workers,
                    tile_cache_mb=args.tile_cache,
                    basemap=args.basemap,
                    open_browser=not args.no_browser,
                    demo_token=True,
                )
            )
        elif args.command == "user":
            if args.db is None and args.data is None:
                print(
                    "tessera user add: give --data DIR (the folder you serve) or --db URL",
                    file=sys.stderr,
                )
                return 2
            url = args.db or default_db_url(state_dir(args.data.resolve()))
            store = open_store(url)
            _, token = store.add_user(args.name, Role(args.role))
            store.close()
            print(token)
        elif args.command in ("export", "import"):
            from tileserver.transfer import run_export, run_import

            return run_export(args) if args.command == "export" else run_import(args)
    except (TileServerError, AnnotError) as exc:
        print(f"tessera: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

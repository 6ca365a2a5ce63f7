"""TiTiler for the benchmark: ``TilerFactory`` routes under /cog, served by N uvicorn processes.

Runs in bench/.venv-titiler (titiler.core + uvicorn[standard]), never in the project venv.
Each process binds its own listening socket to the same port with SO_REUSEPORT, so that the
kernel spreads connections over the processes (one shared socket, as with ``uvicorn --workers``,
often sends every keep-alive connection to one process: see /work/shared/PERFORMANCE.md).

    bench/.venv-titiler/bin/python bench/titiler_app.py --port 8100 --processes 2

Routes: GET /healthz, and /cog/... e.g.
/cog/tiles/WebMercatorQuad/{z}/{x}/{y}.jpg?url=/abs/path/to/file.tif
"""

from __future__ import annotations

import argparse
import multiprocessing
import signal
import socket
import sys
from types import FrameType

from fastapi import FastAPI
from titiler.core.errors import DEFAULT_STATUS_CODES, add_exception_handlers
from titiler.core.factory import TilerFactory


def make_app() -> FastAPI:
    app = FastAPI(title="TiTiler (Tessera benchmark)", openapi_url=None, docs_url=None)
    cog = TilerFactory(router_prefix="/cog")
    app.include_router(cog.router, prefix="/cog")
    add_exception_handlers(app, DEFAULT_STATUS_CODES)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = make_app()


def reuseport_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_one(host: str, port: int) -> None:
    """One uvicorn process on its own SO_REUSEPORT socket (uvloop + httptools, no access log)."""
    import uvicorn

    sock = reuseport_socket(host, port)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args(argv)
    if args.processes == 1:
        run_one(args.host, args.port)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=run_one, args=(args.host, args.port), name=f"titiler-{i}")
        for i in range(args.processes)
    ]
    for p in procs:
        p.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()
    return max((p.exitcode or 0) for p in procs)


if __name__ == "__main__":
    sys.exit(main())

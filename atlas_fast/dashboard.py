"""``atlas-fast serve``: the ``/performance`` dashboard and its JSON API.

A Starlette app over one database, opened read-only for every request so it
can watch a run that another process is writing (WAL).  The page is static
HTML; its script polls the API every 2 s and draws plain SVG charts, putting
every string from the data (subjects, addresses, rule ids, sources) into the
DOM as text.  A Content-Security-Policy forbids inline script on top of that.

Routes
------
``/performance``              the dashboard (``/`` redirects here)
``/api/runs?limit=N``         run history, newest first
``/api/runs/latest``          everything about the newest run
``/api/runs/{run_id}``        everything about one run (see :func:`atlas_fast.stats.run_report`)
``/api/health``               ``{"ok": true, "db": ...}``

Run with ``atlas-fast serve --db mail.sqlite`` or
``python -m atlas_fast.dashboard --db mail.sqlite [--host H] [--port N]``.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path

from .errors import AtlasError
from .stats import MessageCounts, list_runs, open_readonly, run_report

__all__ = ["create_app", "serve", "main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_STATIC = {
    "performance.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def _static_text(name: str) -> str:
    return resources.files("atlas_fast").joinpath("static", name).read_text(encoding="utf-8")


def create_app(db_path):
    """The Starlette application serving ``db_path``.

    The database may not exist yet: the API then reports no runs, and the
    page fills in once a run creates it.
    """
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, RedirectResponse, Response
    from starlette.routing import Route

    db_path = Path(os.fspath(db_path))
    counts = MessageCounts()  # verdict counts grow with each poll instead of rescanning
    static = {name: _static_text(name) for name in _STATIC}
    headers = {
        "Content-Security-Policy": _CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    def static_response(name: str) -> Response:
        return Response(static[name], media_type=_STATIC[name], headers=headers)

    def api(payload, status_code: int = 200) -> JSONResponse:
        return JSONResponse(payload, status_code=status_code, headers=headers)

    def with_db(read):
        if not db_path.is_file():
            return None
        conn = open_readonly(db_path)
        try:
            return read(conn)
        finally:
            conn.close()

    def index(request):
        return RedirectResponse("/performance")

    def performance(request):
        return static_response("performance.html")

    def asset(request):
        name = request.path_params["name"]
        if name not in _STATIC or name.endswith(".html"):
            return Response("not found", status_code=404, media_type="text/plain")
        return static_response(name)

    def health(request):
        return api({"ok": True, "db": str(db_path), "exists": db_path.is_file()})

    def runs(request):
        try:
            limit = int(request.query_params.get("limit", "100"))
        except ValueError:
            return api({"error": "limit must be an integer"}, 400)
        limit = max(1, min(limit, 1000))
        try:
            found = with_db(lambda conn: list_runs(conn, limit))
        except AtlasError as exc:
            return api({"error": str(exc)}, 503)
        return api({"runs": found or []})

    def one_run(request):
        raw = request.path_params["run"]
        if raw == "latest":
            run_id = None
        elif raw.isdigit():
            run_id = int(raw)
        else:
            return api({"error": "run must be a number or 'latest'"}, 400)
        try:
            report = with_db(lambda conn: run_report(conn, run_id, cache=counts))
        except AtlasError as exc:
            return api({"error": str(exc)}, 503)
        if report is None:
            return api({"error": f"no run {raw}"}, 404)
        return api(report)

    routes = [
        Route("/", index),
        Route("/performance", performance),
        Route("/static/{name}", asset),
        Route("/api/health", health),
        Route("/api/runs", runs),
        Route("/api/runs/{run}", one_run),
    ]
    return Starlette(routes=routes)


def serve(db_path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve the dashboard for ``db_path`` until interrupted.

    Parameters
    ----------
    db_path
        The database runs write to (opened read-only).
    host
        Interface to bind; the loopback interface by default.
    port
        TCP port (``0`` picks a free one).
    """
    import uvicorn

    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise AtlasError(f"port must be an integer from 0 to 65535, got {port!r}")
    app = create_app(db_path)
    print(f"atlas-fast: serving {db_path} at http://{host}:{port}/performance (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` options, for the CLI's subparser."""
    parser.add_argument("--db", required=True, help="SQLite database written by atlas-fast process")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")


def main_serve(args: argparse.Namespace) -> int:
    """Run ``serve`` from parsed arguments (``--db``, ``--host``, ``--port``)."""
    serve(args.db, host=args.host, port=args.port)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas_fast.dashboard",
                                     description="Serve the /performance dashboard of a database.")
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return main_serve(args)
    except AtlasError as exc:
        print(f"atlas-fast serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

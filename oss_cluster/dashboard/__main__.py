"""python -m oss_cluster.dashboard {build, serve}: the research dashboard of a run storage.

    python -m oss_cluster.dashboard build --runs ./oss-runs --out ./oss-dashboard     # a static site
    python -m oss_cluster.dashboard serve --runs ./oss-runs                           # http://127.0.0.1:8050
    OSS_DASHBOARD_TOKEN=... python -m oss_cluster.dashboard serve --runs s3://bucket/oss --host 0.0.0.0

`serve` rebuilds the site every --refresh seconds while runs train. It binds 127.0.0.1 unless --host says
otherwise, and any other address needs a bearer token (--token or $OSS_DASHBOARD_TOKEN), checked on every
request: `Authorization: Bearer <token>`, or open `/?token=<token>` once in a browser (it becomes a cookie).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..access import is_loopback
from ..storage import StorageError, open_storage
from .collect import STALE_AFTER_S, DashboardError
from .site import COOKIE, TOKEN_ENV, Site, build, byte_range, content_type


def make_handler(site: Site):
    class Handler(BaseHTTPRequestHandler):
        server_version = "oss-dashboard"

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            if os.environ.get("OSS_DASHBOARD_ACCESS_LOG"):
                super().log_message(format, *args)

        def _send_text(self, status: int, text: str, headers: dict | None = None) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802 - http.server's naming
            self.do_GET()

        def do_GET(self):  # noqa: N802
            path, _, query = self.path.partition("?")
            refusal, set_cookie = site.authorize(self.headers.get("Authorization"), self.headers.get("Cookie"), query,
                                                 self.client_address[0])
            if refusal:
                self._send_text(401, f"401 unauthorized: {refusal}\n", {"WWW-Authenticate": 'Bearer realm="oss-dashboard"'})
                return
            if set_cookie:  # the token leaves the address bar and lives in a cookie for this site
                self.send_response(HTTPStatus.SEE_OTHER)
                self.send_header("Set-Cookie", f"{COOKIE}={site.token}; HttpOnly; SameSite=Strict; Path=/")
                self.send_header("Location", path or "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            target = site.resolve(path)
            if target is None:
                self._send_text(404, f"404 not found: {path}\n")
                return
            size = target.stat().st_size
            span = byte_range(self.headers.get("Range"), size)
            start, end = span or (0, size - 1)
            self.send_response(206 if span else 200)
            self.send_header("Content-Type", content_type(target))
            self.send_header("Content-Length", str(max(0, end - start + 1)))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Cache-Control", "no-cache")
            if span:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if self.command == "HEAD" or size == 0:
                return
            with open(target, "rb") as handle:
                handle.seek(start)
                remaining = end - start + 1
                while remaining > 0:
                    chunk = handle.read(min(1 << 16, remaining))
                    if not chunk:
                        break
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        return
                    remaining -= len(chunk)

    return Handler


class DualStackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where there is one and the help does not already say it."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oss_cluster.dashboard", description=__doc__.splitlines()[0],
                                     formatter_class=_Help)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("build", "write the static site"), ("serve", "serve the site, rebuilding it as runs change")):
        command = commands.add_parser(name, help=text, formatter_class=_Help)
        command.add_argument("--runs", default="./oss-runs", help="storage root holding the runs (folder or s3://)")
        command.add_argument("--endpoint-url", help="S3 endpoint override (default: AWS_ENDPOINT_URL)")
        command.add_argument("--stale-after", type=float, default=STALE_AFTER_S / 60, metavar="MINUTES",
                             help="a run marked running that is silent this long (and 5x its usual log interval) "
                                  "is shown as lost")
        if name == "build":
            command.add_argument("--out", required=True, help="site folder to write (new, empty, or built before)")
        else:
            command.add_argument("--out", help="site folder (default: a temporary folder)")
            command.add_argument("--host", default="127.0.0.1",
                                 help="address to bind; anything but loopback needs a token")
            command.add_argument("--port", type=int, default=8050, help="port to bind")
            command.add_argument("--token", help=f"bearer token every request must carry (default ${TOKEN_ENV})")
            command.add_argument("--refresh", type=float, default=15.0, metavar="SECONDS", help="rebuild interval")
    args = parser.parse_args(argv)
    stale_after_s = args.stale_after * 60
    try:
        if "://" not in args.runs and not Path(args.runs).is_dir():
            raise DashboardError(f"--runs {args.runs}: no such folder (the storage root of the runs, e.g. ./oss-runs "
                                 "after python jobs/train_heavy.py --smoke, or s3://bucket/prefix)")
        storage = open_storage(args.runs, endpoint_url=args.endpoint_url)
        if args.command == "build":
            data = build(storage, Path(args.out), stale_after_s)
            count = len(data["runs"])
            print(f"built the dashboard of {count} run{'' if count == 1 else 's'} under {storage.uri} into {args.out} "
                  f"(open {Path(args.out).resolve() / 'index.html'} through a web server: python -m "
                  f"oss_cluster.dashboard serve --runs {args.runs})")
            return 0
        token = args.token or os.environ.get(TOKEN_ENV) or None
        if not is_loopback(args.host) and not token:
            raise DashboardError(f"--host {args.host}: binding beyond this machine needs a bearer token (--token or "
                                 f"${TOKEN_ENV}); without one, keep the default --host 127.0.0.1")
        out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="oss-dashboard-"))
        site = Site(storage, out, token, args.refresh, stale_after_s).start()
        try:
            server = DualStackServer((args.host, args.port), make_handler(site))
        except OSError as err:
            raise DashboardError(f"--host {args.host} --port {args.port}: cannot bind: {err}") from None
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"dashboard of {storage.uri} at http://{shown}:{server.server_address[1]}/"
              f"{' (token required)' if token else ''}; Ctrl-C stops", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            site.stop()
            server.server_close()
        return 0
    except (DashboardError, StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The static dashboard site: build it from storage, keep it current, and answer requests for it.

    <site>/index.html, app.js, style.css   the pages (static/, served by the project: no CDN, no library)
    <site>/data.json                       runs table, tiers, sweeps, cost, claims (collect.py)
    <site>/run/<name>.json                 one run's curves, strips, evaluations, checkpoints, config
    <site>/files/<storage key>             the strips, panels, clips and plots those link

`Site` is shared by `python -m oss_cluster.dashboard serve` (http.server) and the Serve app's /dashboard
route: both ask `authorize` and `resolve` for every request, so the token rule is the same everywhere.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs

from ..access import bearer_token, is_loopback, token_matches
from ..storage import Storage
from .collect import STALE_AFTER_S, DashboardError, Media, collect

STATIC = Path(__file__).resolve().parent / "static"
MARKER = ".oss-dashboard"  # a folder holding this was built here: a rebuild may replace what it wrote
TOKEN_ENV = "OSS_DASHBOARD_TOKEN"
COOKIE = "oss_dashboard_token"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json", ".png": "image/png",
                 ".mp4": "video/mp4", ".txt": "text/plain; charset=utf-8", ".svg": "image/svg+xml"}


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(text)
    partial.replace(path)


def prepare_folder(out: Path) -> None:
    """Make `out` a site folder; refuse one that holds anything this command did not write."""
    if out.exists() and not out.is_dir():
        raise DashboardError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DashboardError(f"--out {out}: the folder holds other files (not a dashboard built here); "
                             "nothing was written: give an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("built by python -m oss_cluster.dashboard; rebuilt in place\n")


def _pages(out: Path) -> None:
    """The site folder, ready, with the pages (index.html, app.js, style.css) in it."""
    prepare_folder(out)
    for source in STATIC.iterdir():
        if source.is_file():
            shutil.copyfile(source, out / source.name)


def build(storage: Storage, out: Path, stale_after_s: float = STALE_AFTER_S) -> dict:
    """Write the whole site for `storage` into `out` (data.json last, so a reader never sees a half build)."""
    _pages(out)
    media = Media(storage, out)
    data, details = collect(storage, media, stale_after_s=stale_after_s)
    for name, detail in details.items():
        _write_atomic(out / "run" / f"{name}.json", json.dumps(detail, default=str))
    _write_atomic(out / "data.json", json.dumps(data, default=str))
    return data


def build_error(out: Path, storage_uri: str, error: Exception) -> None:
    """A data.json that makes the page show why storage could not be read (the serve loop keeps trying)."""
    _pages(out)
    _write_atomic(out / "data.json", json.dumps({
        "error": str(error), "storage": storage_uri,
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}))


class Site:
    """A site folder kept current from storage by a background thread, with the token rule for requests."""

    def __init__(self, storage: Storage, out: Path, token: str | None = None, refresh_s: float = 15.0,
                 stale_after_s: float = STALE_AFTER_S, log=print):
        self.storage, self.out, self.token = storage, Path(out), token or None
        self.refresh_s, self.stale_after_s, self.log = refresh_s, stale_after_s, log
        self.builds, self.last_error = 0, None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rebuild(self) -> None:
        started = time.perf_counter()
        try:
            data = build(self.storage, self.out, self.stale_after_s)
        except DashboardError as err:
            if self.last_error != str(err):
                self.log(f"dashboard: {err}")
            self.last_error = str(err)
            build_error(self.out, self.storage.uri, err)
            return
        if self.builds == 0 or self.last_error:
            count = len(data["runs"])
            self.log(f"dashboard: built {count} run{'' if count == 1 else 's'} from {self.storage.uri} into {self.out} "
                     f"in {time.perf_counter() - started:.1f} s; rebuilding every {self.refresh_s:g} s")
        self.builds += 1
        self.last_error = None

    def start(self, background: bool = False) -> "Site":
        """Build once (now, or first thing in the background), then keep rebuilding: runs change as they train."""
        if not background:
            self.rebuild()

        def loop():
            first = background
            while first or not self._stop.wait(self.refresh_s):
                first = False
                try:
                    self.rebuild()
                except Exception as err:  # noqa: BLE001 - keep serving the last good build
                    self.log(f"dashboard: rebuild failed: {type(err).__name__}: {err}")

        self._thread = threading.Thread(target=loop, name="dashboard-rebuild", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def authorize(self, header: str | None, cookie: str | None, query: str | None,
                  client: str | None) -> tuple[str | None, bool]:
        """(refusal, set_cookie): None when the request may proceed, else why not. Without a configured token only
        this machine is answered; with one, the bearer token in the Authorization header, the cookie, or `?token=`
        (which then becomes the cookie, so a browser needs it once) must match it."""
        if self.token is None:
            return (None if is_loopback(client) else
                    "the dashboard answers other machines only with a bearer token: set one where it is served"), False
        given = bearer_token(header)
        if given is None and cookie:
            for part in cookie.split(";"):
                name, _, value = part.strip().partition("=")
                if name == COOKIE:
                    given = value
        from_query = False
        if given is None and query:
            values = parse_qs(query).get("token")
            given, from_query = (values[0], True) if values else (None, False)
        if not token_matches(given, [self.token]):
            return "this dashboard needs its bearer token (Authorization: Bearer <token>, or open ?token=<token> once)", False
        return None, from_query

    def resolve(self, path: str) -> Path | None:
        """The file under the site folder a URL path names (index.html for the root); None outside it."""
        relative = path.split("?", 1)[0].lstrip("/") or "index.html"
        target = (self.out / relative).resolve()
        root = self.out.resolve()
        if root not in target.parents and target != root:
            return None
        if target.is_dir():
            target = target / "index.html"
        return target if target.is_file() and not target.name.endswith(".part") else None


def content_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single `Range: bytes=a-b` request (video seeking), or None for the whole file."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header[6:].partition("-")
    try:
        if first == "":
            start, end = max(0, size - int(last)), size - 1
        else:
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
    except ValueError:
        return None
    return (start, end) if 0 <= start <= end else None

"""Guards for secrets and for the files the app hands out.

- A failure limiter for passwords and tokens: after `max_failures` failed attempts from one
  client (its IP address), or `global_max_failures` from everyone, further attempts are refused
  with "too many attempts, try again in N s" for 1, 2, 4, … s (up to `max_delay_s`) after each
  further failure; the count starts again after `window_s` seconds without a failure. Each
  failure is logged as one line (no traceback). Settings: LATENT_ATLAS_AUTH_MAX_FAILURES (5),
  LATENT_ATLAS_AUTH_WINDOW_S (60), LATENT_ATLAS_AUTH_MAX_DELAY_S (300),
  LATENT_ATLAS_AUTH_GLOBAL_MAX_FAILURES (50).
- A private upload/temp folder for Gradio (GRADIO_TEMP_DIR), mode 0700, under the cache dir:
  use_private_temp_dir(cache_root), called before any component is created.
- One-time files (admin exports): written to a fresh 0700 folder inside Gradio's file folder
  (so Gradio serves the file in place, no copy), deleted after their first complete download
  (ServeOnceMiddleware, installed with launch(app_kwargs=app_kwargs())) or after a TTL
  (LATENT_ATLAS_EXPORT_TTL_S, 300 s), and at exit.
- csv_safe(df): text cells that a spreadsheet would run as formulas get a leading quote.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from backends.clusters.annotations import csv_safe, escape_formula  # noqa: F401  (re-exported for the tabs)
from backends.errors import InputError

log = logging.getLogger("latent_atlas.auth")

EXPORTS_DIRNAME = "la-exports"


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


# ---------------------------------------------------------------------------------------
# Failed attempts at secrets: backoff per client and for everyone


class TooManyAttempts(InputError):
    def __init__(self, retry_after: float):
        self.retry_after = max(1, math.ceil(retry_after))
        super().__init__(f"too many attempts, try again in {self.retry_after} s")


_LIMITER_SETTINGS = ("max_failures", "window_s", "base_delay_s", "max_delay_s", "global_max_failures",
                     "global_max_delay_s")


@dataclass
class _Count:
    n: int = 0  # failures in the current run
    last: float = 0.0  # time of the last failure
    until: float = 0.0  # refused until then


class FailureLimiter:
    """Counts failed attempts per client and for everyone; thread-safe."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, base_delay_s: float = 1.0,
                 max_delay_s: float = 300.0, global_max_failures: int = 50, global_max_delay_s: float = 60.0,
                 clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._initial = dict(max_failures=max_failures, window_s=window_s, base_delay_s=base_delay_s,
                             max_delay_s=max_delay_s, global_max_failures=global_max_failures,
                             global_max_delay_s=global_max_delay_s)
        self.configure(**self._initial)

    @classmethod
    def from_env(cls) -> FailureLimiter:
        return cls(max_failures=int(_env_number("LATENT_ATLAS_AUTH_MAX_FAILURES", 5)),
                   window_s=_env_number("LATENT_ATLAS_AUTH_WINDOW_S", 60.0),
                   max_delay_s=_env_number("LATENT_ATLAS_AUTH_MAX_DELAY_S", 300.0),
                   global_max_failures=int(_env_number("LATENT_ATLAS_AUTH_GLOBAL_MAX_FAILURES", 50)))

    def configure(self, **settings) -> None:
        """Change settings (max_failures, window_s, base_delay_s, max_delay_s, global_max_failures,
        global_max_delay_s) and forget all counts."""
        with self._lock:
            for key, value in settings.items():
                if key not in _LIMITER_SETTINGS:
                    raise TypeError(f"unknown setting {key!r}")
                setattr(self, key, value)
            self._clients: dict[str, _Count] = {}
            self._everyone = _Count()

    def reset(self) -> None:
        """Forget all counts and go back to the settings it was made with."""
        self.configure(**self._initial)

    def retry_after(self, client: str) -> float:
        """Seconds until this client may try again (0: now)."""
        now = self.clock()
        with self._lock:
            c = self._clients.get(client)
            return max(0.0, (c.until if c else 0.0) - now, self._everyone.until - now)

    def check(self, client: str) -> None:
        wait = self.retry_after(client)
        if wait > 0:
            raise TooManyAttempts(wait)

    def failure(self, client: str) -> tuple[int, int]:
        """Count a failed attempt; returns (failures of this client, of everyone) in the current run."""
        now = self.clock()
        with self._lock:
            if len(self._clients) > 10_000:  # forget clients that have been quiet for a window
                self._clients = {k: c for k, c in self._clients.items() if not self._quiet(c, now)}
            c = self._clients.setdefault(client, _Count())
            self._count(c, now, self.max_failures, self.max_delay_s)
            self._count(self._everyone, now, self.global_max_failures, self.global_max_delay_s)
            return c.n, self._everyone.n

    def _quiet(self, c: _Count, now: float) -> bool:
        return now - max(c.last, c.until) > self.window_s

    def _count(self, c: _Count, now: float, limit: int, cap: float) -> None:
        if c.n and self._quiet(c, now):
            c.n = 0
        c.n += 1
        c.last = now
        if c.n >= limit:
            c.until = now + min(cap, self.base_delay_s * 2 ** (c.n - limit))


LIMITER = FailureLimiter.from_env()


def client_of(request=None) -> str:
    """The client's IP address, from the gr.Request of the event being handled (or the one given);
    "local" outside of a request."""
    if request is None:
        try:
            from gradio.context import LocalContext

            request = LocalContext.request.get(None)
        except Exception:  # noqa: BLE001 - no gradio context: a direct call
            request = None
    try:
        host = request.client.host if request is not None else None
    except Exception:  # noqa: BLE001 - a request without a client (tests, internal calls)
        host = None
    return str(host) if host else "local"


class AuthRefused(InputError):
    """A secret (password, token) refused, or the client locked out for a while."""


def auth_attempt(what: str, fn, *args, failures: tuple = (InputError,), limiter: FailureLimiter | None = None,
                 **kwargs):
    """fn(*args, **kwargs), a check of a secret (password, token), under the failure limiter.

    While the client (or everyone) is locked out the check is not run: AuthRefused "too many
    attempts, try again in N s". An exception in `failures` counts as a failed attempt, is logged as
    one line and becomes AuthRefused with its message (an InputError: the tabs' `guard` shows it
    without a traceback in the server log). No gradio here: the services call this."""
    limiter = limiter or LIMITER
    client = client_of()
    try:
        limiter.check(client)
    except TooManyAttempts as exc:
        log.warning("refused %s from %s: %s", what, client, exc)
        raise AuthRefused(str(exc)) from None
    try:
        return fn(*args, **kwargs)
    except failures as exc:
        mine, everyone = limiter.failure(client)
        log.warning("failed %s from %s: %s (%d in a row from this client, %d from all)", what, client,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__, mine, everyone)
        raise AuthRefused(str(exc)) from None


# ---------------------------------------------------------------------------------------
# Gradio's upload/temp folder: private, under the cache dir


def use_private_temp_dir(cache_root) -> Path:
    """Point Gradio's upload and temp folder (GRADIO_TEMP_DIR) at a private one for this process:
    <cache_root>/tmp/run-<pid>-XXXX, mode 0700 (its parent too), removed at exit; folders left by
    earlier runs that are no longer alive (kill -9) are removed. A GRADIO_TEMP_DIR already set (by
    the user, or by an earlier call) is kept, made if missing. Call it before any Gradio component
    is created: each component and the server read the folder once. Returns the folder."""
    given = os.environ.get("GRADIO_TEMP_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path.resolve()
    parent = Path(cache_root).expanduser() / "tmp"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(parent, 0o700)
    remove_stale_runs(parent)
    run = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=parent)).resolve()  # mode 0700
    os.environ["GRADIO_TEMP_DIR"] = str(run)
    atexit.register(shutil.rmtree, run, ignore_errors=True)
    return run


def remove_stale_runs(parent: Path) -> list[Path]:
    """Remove run-<pid>-* folders of processes that are gone; returns them."""
    removed = []
    for d in Path(parent).glob("run-*-*"):
        try:
            pid = int(d.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------
# One-time files: exports


def export_ttl_s() -> float:
    return _env_number("LATENT_ATLAS_EXPORT_TTL_S", 300.0)


class ServeOnce:
    """Files that are deleted (with their folder) after one complete download or after a TTL."""

    def __init__(self):
        self._lock = threading.Lock()
        self._timers: dict[str, threading.Timer] = {}

    def add(self, path, ttl_s: float | None = None) -> str:
        key = os.path.realpath(path)
        timer = threading.Timer(export_ttl_s() if ttl_s is None else ttl_s, self.discard, [key])
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(key, None)
            self._timers[key] = timer
        if old:
            old.cancel()
        timer.start()
        return key

    def __contains__(self, path) -> bool:
        with self._lock:
            return os.path.realpath(path) in self._timers

    def discard(self, path) -> None:
        key = os.path.realpath(path)
        with self._lock:
            timer = self._timers.pop(key, None)
        if timer:
            timer.cancel()
        p = Path(key)
        if p.parent.parent.name == EXPORTS_DIRNAME:  # the file's own folder from new_export_dir
            # renamed first, so the file and its folder vanish together (one atomic step), then removed
            gone = p.parent.with_name(f".gone-{p.parent.name}")
            try:
                os.rename(p.parent, gone)
            except OSError:
                gone = p.parent
            shutil.rmtree(gone, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def discard_all(self) -> None:
        with self._lock:
            keys = list(self._timers)
        for key in keys:
            self.discard(key)


SERVE_ONCE = ServeOnce()
atexit.register(SERVE_ONCE.discard_all)


def new_export_dir(block=None) -> Path:
    """A fresh folder (mode 0700) for one export file, in <Gradio's file folder>/la-exports (0700):
    Gradio serves a file from there in place (a file elsewhere is copied into its cache, where it
    is kept). `block`: the component that will show the file (its folder), else GRADIO_TEMP_DIR's.
    Export folders older than the TTL (left by a killed server) are removed on the way."""
    from app.components.files import gradio_temp_dir

    root = Path(getattr(block, "GRADIO_CACHE", None) or gradio_temp_dir())
    parent = root / EXPORTS_DIRNAME
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(parent, 0o700)
    cutoff = time.time() - export_ttl_s()
    for old in [*parent.glob("export-*"), *parent.glob(".gone-export-*")]:
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix="export-", dir=parent))


def serve_once(path, ttl_s: float | None = None) -> str:
    """Register a file to be deleted after its first complete download (or the TTL); returns path."""
    SERVE_ONCE.add(path, ttl_s)
    return str(path)


def _file_path(scope) -> str | None:
    """The local path a Gradio file URL (…/file=PATH or …/file/PATH) asks for."""
    path = scope.get("path") or ""
    for marker in ("/file=", "/file/"):
        i = path.find(marker)
        if i >= 0:
            return unquote(path[i + len(marker):])
    return None


class ServeOnceMiddleware:
    """ASGI middleware: a file registered with serve_once is deleted once a GET of it has been
    answered in full (200). Install: demo.launch(app_kwargs=app_kwargs())."""

    def __init__(self, app, registry: ServeOnce | None = None):
        self.app = app
        self.registry = registry or SERVE_ONCE

    async def __call__(self, scope, receive, send):
        path = _file_path(scope) if scope.get("type") == "http" and scope.get("method") == "GET" else None
        if not path or path not in self.registry:
            return await self.app(scope, receive, send)
        status = {}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body") and status.get("code") == 200:
                self.registry.discard(path)

        return await self.app(scope, receive, sending)


def app_kwargs() -> dict:
    """For demo.launch(app_kwargs=...): the server deletes one-time files after their download."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(ServeOnceMiddleware)]}

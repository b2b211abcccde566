"""The annotation store: task sets, plots, annotators and their answers, in a real database.

SQLite in WAL mode by default (one file, no server); any SQLAlchemy URL (PostgreSQL) works too.

Durability: a submission is acknowledged only after its transaction has committed. On SQLite
the store runs with `journal_mode=WAL` and `synchronous=FULL`, so every commit fsyncs the WAL:
an acknowledged answer survives a kill -9 of the server *and* a power loss. (NORMAL would
survive a process crash but may lose the last commits on power loss; an answer someone spent a
minute on is worth one fsync.) Writers start with `BEGIN IMMEDIATE` so two writers never
deadlock on a lock upgrade, and `busy_timeout` makes a second process wait instead of failing.

Idempotency: (annotator, plot) is unique. A retried submission with the same answer returns the
stored annotation instead of a second row; a different answer for a plot already answered is
rejected (answers are final).

Access: an annotator answers only the plot the server handed to them (`next_plot` records it per
annotator and task set, in `plot_assignments`); a plot stays handed out until it is answered or
skipped. Sign-up (an unknown name registering itself with its token) is closed unless the admin
opens it for a task set. Tokens are stored as salted PBKDF2 hashes; a failed sign-in says
"unknown name or wrong token" whichever it was.

    store = get_store("sqlite:////tmp/annotations.sqlite")
    ts = store.create_task_set("pilot", [PlotSpec(xy) for xy in maps], target_annotators=3)
    who = store.register_annotator("ada", "a-long-token")   # or: store.set_signup_open(ts, True)
    who = store.sign_in("ada", "a-long-token", ts)
    plot = store.next_plot(who.id, ts)
    store.submit(who.id, plot.id, {"cluster 1": [0, 1, 2], "noise": [7]})
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from backends.errors import InputError

MAX_POINTS_PER_PLOT = 2_000  # lasso dragging with software WebGL gets slow above a few thousand
MAX_GROUPS = 20  # "cluster 1" … "cluster 20" plus "noise"
MAX_PAYLOAD_CHARS = 64_000  # a groups JSON for 2,000 points is ~12 kB
NOISE = "noise"
UNASSIGNED = "unassigned"
_GROUP_RE = re.compile(r"^cluster ([1-9][0-9]?)$")
_TOKEN_ITERATIONS = 60_000
# One message for an unknown name and a wrong token: a failed sign-in does not tell which names exist.
BAD_CREDENTIALS = "unknown name or wrong token (new annotators: ask the study's admin for a token)"
# Cells a spreadsheet would run as a formula (OWASP "CSV injection"): such text gets a leading quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class AuthError(InputError):
    """Unknown annotator, wrong token, or wrong admin password."""


# ---------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class PlotSpec:
    """A plot to store: xy (N, 2) coordinates, optional source ids and ground-truth labels."""

    xy: np.ndarray
    source_ids: list[str] | None = None
    truth: list[int] | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Plot:
    id: int
    task_set_id: int
    position: int
    xy: np.ndarray
    source_ids: list[str]
    truth: list[int] | None
    meta: dict

    @property
    def n_points(self) -> int:
        return len(self.xy)


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str


@dataclass(frozen=True)
class SubmitResult:
    annotation_id: int
    created: bool  # False: an identical answer was already stored (a retried submission)
    skipped: bool


# ---------------------------------------------------------------------------------------
# Validation of a submission's groups


def group_names(n_clusters: int = MAX_GROUPS) -> list[str]:
    return [f"cluster {k}" for k in range(1, n_clusters + 1)] + [NOISE]


def parse_groups(groups, n_points: int) -> dict[str, list[int]]:
    """Validate a submission: {"cluster 1": [point ids], …, "noise": [...]}. JSON text or dict.

    Point ids are the row indices 0 … n_points-1 of the plot. Every listed group must be
    non-empty, a point may appear in one group only; points not listed are "unassigned".
    Returns the groups with sorted ids, groups in a canonical order.
    """
    if isinstance(groups, str):
        if len(groups) > MAX_PAYLOAD_CHARS:
            raise InputError(f"groups is too large: {len(groups):,} characters (at most {MAX_PAYLOAD_CHARS:,})")
        if not groups.strip():
            raise InputError("groups is empty: select points into at least one group, or skip the plot")
        try:
            groups = json.loads(groups)
        except json.JSONDecodeError as exc:
            raise InputError(f"groups is not valid JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(groups, dict):
        raise InputError(f"groups must be a JSON object {{group: [point ids]}}, but is {type(groups).__name__}")
    if not groups:
        raise InputError("groups is empty: select points into at least one group, or skip the plot")
    if len(groups) > MAX_GROUPS + 1:
        raise InputError(f"groups has {len(groups)} groups; at most {MAX_GROUPS} clusters and noise are allowed")
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, ids in groups.items():
        if not isinstance(name, str) or not (name == NOISE or _GROUP_RE.match(name)) or (
            name != NOISE and int(_GROUP_RE.match(name).group(1)) > MAX_GROUPS
        ):
            raise InputError(f"group name {name!r} is not allowed; use 'cluster 1' … 'cluster {MAX_GROUPS}' or 'noise'")
        if not isinstance(ids, list):
            raise InputError(f"group {name!r} must be a list of point ids, but is {type(ids).__name__}")
        if not ids:
            raise InputError(f"group {name!r} is empty; leave it out or add points to it")
        if len(ids) > n_points:
            raise InputError(f"group {name!r} has {len(ids)} ids but the plot has only {n_points} points")
        clean = []
        for pid in ids:
            if isinstance(pid, bool) or not isinstance(pid, (int, str)):
                raise InputError(f"group {name!r}: point id {pid!r} is not an integer")
            try:
                p = int(pid)
            except ValueError:
                raise InputError(f"group {name!r}: point id {pid!r} is not an integer") from None
            if not 0 <= p < n_points:
                raise InputError(f"group {name!r}: point id {p} is out of range; this plot has points 0…{n_points - 1}")
            if p in owner and owner[p] != name:
                raise InputError(f"point {p} is in two groups: {owner[p]!r} and {name!r}")
            owner[p] = name
            clean.append(p)
        out[name] = sorted(set(clean))
    order = {g: i for i, g in enumerate(group_names())}
    return {g: out[g] for g in sorted(out, key=order.__getitem__)}


def groups_to_labels(groups: dict[str, list[int]], n_points: int) -> list[str]:
    """Point-wise group names; points not in any group are 'unassigned'."""
    labels = [UNASSIGNED] * n_points
    for name, ids in groups.items():
        for p in ids:
            labels[p] = name
    return labels


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not 1 <= len(name) <= 64 or any(c in name for c in "\n\r\t"):
        raise InputError(f"annotator name must be 1–64 characters on one line, but is {name!r}")
    return name


def _check_token(token: str) -> str:
    token = token or ""
    if not 6 <= len(token) <= 256:
        raise AuthError(f"token must be 6–256 characters, but has {len(token)}")
    return token


# ---------------------------------------------------------------------------------------
# The store


_STORES: dict[str, AnnotationStore] = {}
_STORES_LOCK = threading.Lock()


def get_store(url: str) -> AnnotationStore:
    """One store (one engine and connection pool) per database URL in this process."""
    with _STORES_LOCK:
        if url not in _STORES:
            _STORES[url] = AnnotationStore(url)
        return _STORES[url]


def sqlite_path(url: str) -> str | None:
    """The file behind a sqlite URL, or None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    return path if path and path != ":memory:" else None


def _now() -> float:
    return time.time()


class AnnotationStore:
    """Thread-safe; every method opens its own short transaction."""

    def __init__(self, url: str, *, token_iterations: int | None = None):
        """token_iterations: PBKDF2 rounds for token hashes, fixed when the database is created
        (default 60,000: ~30 ms per sign-in; tokens the admin generates are random 128-bit)."""
        from sqlalchemy import create_engine, event
        from sqlalchemy.pool import StaticPool

        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.Lock()  # one writer at a time in this process: no busy-wait on SQLite
        kwargs: dict = {}
        if self.is_sqlite:
            path = sqlite_path(url)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
            if path is None:
                kwargs["poolclass"] = StaticPool
            else:
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
                kwargs.update(pool_size=8, max_overflow=16)
        self.engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            @event.listens_for(self.engine, "connect")
            def _on_connect(dbapi_conn, _record):
                dbapi_conn.isolation_level = None  # transactions are begun explicitly below
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            @event.listens_for(self.engine, "begin")
            def _on_begin(conn):
                write = conn.get_execution_options().get("la_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        self._define_tables()
        from sqlalchemy import inspect

        had_assignments = inspect(self.engine).has_table("plot_assignments")
        self.metadata.create_all(self.engine)  # creates missing tables; never alters existing ones
        self._migrate(backfill_assignments=not had_assignments)
        self._salt = bytes.fromhex(self._meta("token_salt", secrets.token_hex(16)))
        self._iterations = int(self._meta("token_iterations", str(int(token_iterations or _TOKEN_ITERATIONS))))

    # -- schema -----------------------------------------------------------------------
    def _define_tables(self) -> None:
        from sqlalchemy import (
            Boolean,
            Column,
            Float,
            ForeignKey,
            Integer,
            MetaData,
            String,
            Table,
            Text,
            UniqueConstraint,
            false,
        )

        m = self.metadata = MetaData()
        self.t_meta = Table("store_meta", m, Column("key", String(64), primary_key=True), Column("value", Text))
        self.t_sets = Table(
            "task_sets", m,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("name", String(128), nullable=False, unique=True),
            Column("kind", String(32), nullable=False),  # synthetic | corpus | custom
            Column("params", Text, nullable=False, default="{}"),  # JSON: how the plots were made
            Column("target_annotators", Integer, nullable=False, default=3),
            Column("created_at", Float, nullable=False),
            # whether an unknown name may sign up to this task set (added later: see _migrate)
            Column("signup_open", Boolean, nullable=False, default=False, server_default=false()),
        )
        self.t_plots = Table(
            "plots", m,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("task_set_id", Integer, ForeignKey("task_sets.id"), nullable=False, index=True),
            Column("position", Integer, nullable=False),
            Column("n_points", Integer, nullable=False),
            Column("points", Text, nullable=False),  # JSON {"x": [...], "y": [...], "source_ids": [...], "truth": [...]}
            Column("meta", Text, nullable=False, default="{}"),
            UniqueConstraint("task_set_id", "position", name="uq_plot_position"),
        )
        self.t_annotators = Table(
            "annotators", m,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("name", String(64), nullable=False, unique=True),
            Column("token_hash", String(64), nullable=False, unique=True),
            Column("created_at", Float, nullable=False),
        )
        self.t_views = Table(  # when an annotator was first shown a plot: the start of the timing
            "plot_views", m,
            Column("annotator_id", Integer, ForeignKey("annotators.id"), primary_key=True),
            Column("plot_id", Integer, ForeignKey("plots.id"), primary_key=True),
            Column("started_at", Float, nullable=False),
        )
        self.t_assign = Table(  # the plot the server last handed to an annotator in a task set
            "plot_assignments", m,
            Column("annotator_id", Integer, ForeignKey("annotators.id"), primary_key=True),
            Column("task_set_id", Integer, ForeignKey("task_sets.id"), primary_key=True),
            Column("plot_id", Integer, ForeignKey("plots.id"), nullable=True),
            Column("handed_at", Float, nullable=False),
        )
        self.t_ann = Table(
            "annotations", m,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("annotator_id", Integer, ForeignKey("annotators.id"), nullable=False),
            Column("plot_id", Integer, ForeignKey("plots.id"), nullable=False, index=True),
            Column("skipped", Boolean, nullable=False, default=False),
            Column("groups", Text, nullable=False, default="{}"),  # JSON {group: [point ids]}; points not listed: unassigned
            Column("started_at", Float, nullable=True),
            Column("submitted_at", Float, nullable=False),
            UniqueConstraint("annotator_id", "plot_id", name="uq_annotation_once"),
        )

    def _connect_write(self):
        return self.engine.connect().execution_options(la_write=True)

    def _migrate(self, *, backfill_assignments: bool) -> None:
        """Bring a database made by an older version up to this schema, keeping its data:
        task_sets gains signup_open (closed); plot_assignments (new) starts with each annotator's
        latest shown-but-unanswered plot per task set, so work in progress can still be submitted."""
        from sqlalchemy import false, func, inspect, select
        from sqlalchemy.exc import DBAPIError

        with self.engine.connect() as conn:
            has_column = "signup_open" in {c["name"] for c in inspect(conn).get_columns("task_sets")}
        if has_column and not backfill_assignments:
            return
        try:
            with self._write_lock, self._connect_write() as conn, conn.begin():
                cols = {c["name"] for c in inspect(conn).get_columns("task_sets")}
                if "signup_open" not in cols:
                    default = false().compile(dialect=self.engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE task_sets ADD COLUMN signup_open BOOLEAN NOT NULL DEFAULT {default}")
                if backfill_assignments and not conn.execute(select(func.count()).select_from(self.t_assign)).scalar():
                    answered = select(self.t_ann.c.id).where(self.t_ann.c.annotator_id == self.t_views.c.annotator_id,
                                                            self.t_ann.c.plot_id == self.t_views.c.plot_id)
                    q = (select(self.t_views.c.annotator_id, self.t_plots.c.task_set_id, self.t_views.c.plot_id,
                                self.t_views.c.started_at)
                         .select_from(self.t_views.join(self.t_plots, self.t_plots.c.id == self.t_views.c.plot_id))
                         .where(~answered.exists()).order_by(self.t_views.c.started_at))
                    latest = {(r.annotator_id, r.task_set_id): r for r in conn.execute(q)}
                    if latest:
                        conn.execute(self.t_assign.insert(), [
                            {"annotator_id": r.annotator_id, "task_set_id": r.task_set_id, "plot_id": r.plot_id,
                             "handed_at": r.started_at} for r in latest.values()])
        except DBAPIError:  # another process migrated the same database at the same moment
            with self.engine.connect() as conn:
                if "signup_open" not in {c["name"] for c in inspect(conn).get_columns("task_sets")}:
                    raise

    def _meta(self, key: str, default: str) -> str:
        """A store-wide setting, written once (the first process to open the database wins)."""
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        with self.engine.connect() as conn:
            row = conn.execute(select(self.t_meta.c.value).where(self.t_meta.c.key == key)).first()
        if row:
            return row[0]
        try:
            with self._write_lock, self._connect_write() as conn, conn.begin():
                conn.execute(self.t_meta.insert().values(key=key, value=default))
        except IntegrityError:  # another process wrote it first
            pass
        return self._meta(key, default)

    def set_meta(self, key: str, value: str) -> None:
        from sqlalchemy import update

        with self._write_lock, self._connect_write() as conn, conn.begin():
            if conn.execute(update(self.t_meta).where(self.t_meta.c.key == key).values(value=value)).rowcount == 0:
                conn.execute(self.t_meta.insert().values(key=key, value=value))

    def signup_open(self, task_set_id: int) -> bool:
        """Whether an unknown name may sign up to this task set (registered with its own token).
        Closed unless the admin opened it."""
        from sqlalchemy import select

        with self.engine.connect() as conn:
            value = conn.execute(select(self.t_sets.c.signup_open).where(self.t_sets.c.id == int(task_set_id))).scalar()
        if value is None:
            raise InputError(f"unknown task set id {task_set_id}")
        return bool(value)

    def set_signup_open(self, task_set_id: int, value: bool) -> None:
        from sqlalchemy import update

        with self._write_lock, self._connect_write() as conn, conn.begin():
            n = conn.execute(update(self.t_sets).where(self.t_sets.c.id == int(task_set_id))
                             .values(signup_open=bool(value))).rowcount
        if n == 0:
            raise InputError(f"unknown task set id {task_set_id}")

    def token_hash(self, token: str) -> str:
        return _pbkdf2(self._salt, self._iterations, token)

    # -- task sets and plots ------------------------------------------------------------
    def create_task_set(self, name: str, plots: list[PlotSpec], *, kind: str = "custom", params: dict | None = None,
                        target_annotators: int = 3) -> int:
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        name = (name or "").strip()
        if not 1 <= len(name) <= 128:
            raise InputError(f"task set name must be 1–128 characters, but is {name!r}")
        if not plots:
            raise InputError("a task set needs at least one plot")
        if not 1 <= int(target_annotators) <= 1000:
            raise InputError(f"target_annotators must be between 1 and 1000, but is {target_annotators}")
        rows = []
        for pos, spec in enumerate(plots):
            xy = np.asarray(spec.xy, dtype=np.float64)
            if xy.ndim != 2 or xy.shape[1] != 2 or not 2 <= len(xy) <= MAX_POINTS_PER_PLOT:
                raise InputError(f"plot {pos}: xy must be (N, 2) with 2 ≤ N ≤ {MAX_POINTS_PER_PLOT}, but is {xy.shape}")
            if not np.isfinite(xy).all():
                raise InputError(f"plot {pos}: xy contains NaN or Inf")
            n = len(xy)
            src = [str(s) for s in spec.source_ids] if spec.source_ids is not None else [str(i) for i in range(n)]
            if len(src) != n or (spec.truth is not None and len(spec.truth) != n):
                raise InputError(f"plot {pos}: source_ids/truth must have one entry per point ({n})")
            points = {"x": np.round(xy[:, 0], 5).tolist(), "y": np.round(xy[:, 1], 5).tolist(), "source_ids": src,
                      "truth": [int(t) for t in spec.truth] if spec.truth is not None else None}
            rows.append({"position": pos, "n_points": n, "points": json.dumps(points, separators=(",", ":")),
                         "meta": json.dumps(spec.meta or {}, default=_json_default)})
        try:
            with self._write_lock, self._connect_write() as conn, conn.begin():
                ts_id = conn.execute(self.t_sets.insert().values(
                    name=name, kind=kind, params=json.dumps(params or {}, default=_json_default),
                    target_annotators=int(target_annotators), created_at=_now())).inserted_primary_key[0]
                conn.execute(self.t_plots.insert(), [{**r, "task_set_id": ts_id} for r in rows])
        except IntegrityError:
            with self.engine.connect() as conn:
                if conn.execute(select(self.t_sets.c.id).where(self.t_sets.c.name == name)).first():
                    raise InputError(f"a task set named {name!r} already exists; choose another name") from None
            raise
        return int(ts_id)

    def task_sets(self) -> list[dict]:
        from sqlalchemy import func, select

        q = (select(self.t_sets.c.id, self.t_sets.c.name, self.t_sets.c.kind, self.t_sets.c.target_annotators,
                    self.t_sets.c.created_at, self.t_sets.c.params, self.t_sets.c.signup_open,
                    func.count(self.t_plots.c.id).label("n_plots"))
             .select_from(self.t_sets.outerjoin(self.t_plots, self.t_plots.c.task_set_id == self.t_sets.c.id))
             .group_by(self.t_sets.c.id).order_by(self.t_sets.c.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) | {"params": json.loads(r.params), "signup_open": bool(r.signup_open)}
                    for r in conn.execute(q)]

    def task_set_id(self, name_or_id) -> int:
        """A task set by name (or id); InputError naming the known ones if it does not exist."""
        from sqlalchemy import select

        with self.engine.connect() as conn:
            row = None
            if isinstance(name_or_id, int) or (isinstance(name_or_id, str) and name_or_id.strip().isdigit()):
                row = conn.execute(select(self.t_sets.c.id).where(self.t_sets.c.id == int(name_or_id))).first()
            if row is None and isinstance(name_or_id, str):
                row = conn.execute(select(self.t_sets.c.id).where(self.t_sets.c.name == name_or_id.strip())).first()
        if row is None:
            known = ", ".join(repr(t["name"]) for t in self.task_sets()) or "none yet"
            raise InputError(f"unknown task set {name_or_id!r}; known: {known}")
        return int(row[0])

    def plot(self, plot_id) -> Plot:
        from sqlalchemy import select

        try:
            pid = int(plot_id)
        except (TypeError, ValueError):
            raise InputError(f"plot id must be an integer, but is {plot_id!r}") from None
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t_plots).where(self.t_plots.c.id == pid)).first()
        if row is None:
            raise InputError(f"unknown plot {plot_id!r}")
        return _plot_from_row(row)

    def plots(self, task_set_id: int) -> list[Plot]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(select(self.t_plots).where(self.t_plots.c.task_set_id == task_set_id)
                                .order_by(self.t_plots.c.position)).all()
        return [_plot_from_row(r) for r in rows]

    # -- annotators -----------------------------------------------------------------------
    def register_annotator(self, name: str, token: str) -> Annotator:
        from sqlalchemy.exc import IntegrityError

        name, token = _check_name(name), _check_token(token)
        try:
            with self._write_lock, self._connect_write() as conn, conn.begin():
                aid = conn.execute(self.t_annotators.insert().values(
                    name=name, token_hash=self.token_hash(token), created_at=_now())).inserted_primary_key[0]
        except IntegrityError:
            raise AuthError(f"annotator {name!r} already exists, or that token is taken; choose another") from None
        return Annotator(int(aid), name)

    def sign_in(self, name: str, token: str, task_set_id: int | None = None, *,
                allow_register: bool | None = None) -> Annotator:
        """Check name + token. An unknown name is registered with this token when allow_register
        (default: whether sign-up is open for task_set_id; without a task set, never).
        An unknown name and a wrong token fail alike: AuthError(BAD_CREDENTIALS)."""
        from sqlalchemy import select

        name, token = _check_name(name), _check_token(token)
        if allow_register is None:
            allow_register = task_set_id is not None and self.signup_open(task_set_id)
        given = self.token_hash(token)  # hashed for unknown names too: the time taken tells nothing
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t_annotators).where(self.t_annotators.c.name == name)).first()
        if row is None:
            if not allow_register:
                raise AuthError(BAD_CREDENTIALS)
            try:
                return self.register_annotator(name, token)
            except AuthError:  # registered concurrently with this name, or the token is taken
                return self.sign_in(name, token, task_set_id, allow_register=False)
        if not hmac.compare_digest(row.token_hash.encode(), given.encode()):
            raise AuthError(BAD_CREDENTIALS)
        return Annotator(int(row.id), row.name)

    def authenticate(self, token: str) -> Annotator:
        """The annotator holding this token."""
        from sqlalchemy import select

        token = _check_token(token)
        given = self.token_hash(token)
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t_annotators).where(self.t_annotators.c.token_hash == given)).first()
        if row is None or not hmac.compare_digest(row.token_hash.encode(), given.encode()):
            raise AuthError("unknown token: sign in again with your name and token")
        return Annotator(int(row.id), row.name)

    def annotators(self) -> list[dict]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return [{"id": r.id, "name": r.name} for r in conn.execute(select(self.t_annotators.c.id, self.t_annotators.c.name))]

    # -- the annotator's flow ----------------------------------------------------------
    def _handed(self, conn, annotator_id: int, task_set_id: int) -> int | None:
        """The plot last handed to this annotator in this task set (None: none yet, or all done)."""
        from sqlalchemy import select

        pid = conn.execute(select(self.t_assign.c.plot_id).where(
            self.t_assign.c.annotator_id == annotator_id, self.t_assign.c.task_set_id == task_set_id)).scalar()
        return None if pid is None else int(pid)

    def _answered(self, conn, annotator_id: int, plot_id: int) -> bool:
        from sqlalchemy import select

        return conn.execute(select(self.t_ann.c.id).where(
            self.t_ann.c.annotator_id == annotator_id, self.t_ann.c.plot_id == plot_id)).first() is not None

    def handed_plot(self, annotator_id: int, task_set_id: int) -> int | None:
        """The id of the plot this annotator was handed in this task set and has not answered yet."""
        with self.engine.connect() as conn:
            pid = self._handed(conn, annotator_id, task_set_id)
            return pid if pid is not None and not self._answered(conn, annotator_id, pid) else None

    def handed(self, annotator_id: int, plot_id) -> Plot:
        """The plot, if it is the one handed to this annotator (in its task set) and not answered yet;
        InputError otherwise. For everything that shows a plot's points to an annotator."""
        plot = self.plot(plot_id)
        if self.handed_plot(annotator_id, plot.task_set_id) != plot.id:
            raise InputError(_not_handed(plot.id))
        return plot

    def next_plot(self, annotator_id: int, task_set_id: int) -> Plot | None:
        """The plot this annotator is to answer next in this task set, recorded as handed to them.
        A plot handed out and not answered yet is handed again (a second sign-in, a reload);
        otherwise the next plot not answered by them: plots still short of the target first, then
        by position. Records when it was first shown (the start of the annotation's timing)."""
        from sqlalchemy import select

        with self.engine.connect() as conn:
            target = conn.execute(select(self.t_sets.c.target_annotators).where(self.t_sets.c.id == task_set_id)).scalar()
            if target is None:
                raise InputError(f"unknown task set id {task_set_id}")
            handed = self._handed(conn, annotator_id, task_set_id)
            if handed is not None and not self._answered(conn, annotator_id, handed):
                pid = handed
            else:
                pid = self._choose(conn, annotator_id, task_set_id, int(target))
        if pid is None:
            return None
        if pid != handed:
            pid = self._hand_out(annotator_id, task_set_id, pid)
        return self.plot(pid)

    def _choose(self, conn, annotator_id: int, task_set_id: int, target: int) -> int | None:
        from sqlalchemy import func, select

        done = select(self.t_ann.c.plot_id).where(self.t_ann.c.annotator_id == annotator_id)
        counts = (select(self.t_ann.c.plot_id, func.count().label("n")).where(self.t_ann.c.skipped.is_(False))
                  .group_by(self.t_ann.c.plot_id).subquery())
        n = func.coalesce(counts.c.n, 0)
        q = (select(self.t_plots.c.id)
             .select_from(self.t_plots.outerjoin(counts, counts.c.plot_id == self.t_plots.c.id))
             .where(self.t_plots.c.task_set_id == task_set_id, self.t_plots.c.id.not_in(done))
             .order_by((n >= target).asc(), self.t_plots.c.position).limit(1))
        pid = conn.execute(q).scalar()
        return None if pid is None else int(pid)

    def _hand_out(self, annotator_id: int, task_set_id: int, plot_id: int) -> int:
        """Record plot_id as handed to the annotator (and when it was first shown), in one commit.
        Returns the plot handed out: another plot if a concurrent call handed one first."""
        from sqlalchemy import select, update
        from sqlalchemy.exc import IntegrityError

        for attempt in range(3):
            try:
                with self._write_lock, self._connect_write() as conn, conn.begin():
                    now = self._handed(conn, annotator_id, task_set_id)
                    if now is not None and now != plot_id and not self._answered(conn, annotator_id, now):
                        return now  # a concurrent next_plot (another tab) got there first: keep one plot
                    if conn.execute(update(self.t_assign).where(
                            self.t_assign.c.annotator_id == annotator_id, self.t_assign.c.task_set_id == task_set_id)
                            .values(plot_id=plot_id, handed_at=_now())).rowcount == 0:
                        conn.execute(self.t_assign.insert().values(annotator_id=annotator_id, task_set_id=task_set_id,
                                                                   plot_id=plot_id, handed_at=_now()))
                    if not conn.execute(select(self.t_views.c.started_at).where(
                            self.t_views.c.annotator_id == annotator_id, self.t_views.c.plot_id == plot_id)).first():
                        conn.execute(self.t_views.insert().values(annotator_id=annotator_id, plot_id=plot_id,
                                                                  started_at=_now()))
                return plot_id
            except IntegrityError:  # another process inserted the same row (not on SQLite: writers queue)
                if attempt == 2:
                    raise
        return plot_id

    def submit(self, annotator_id: int, plot_id, groups=None, *, skipped: bool = False) -> SubmitResult:
        """Store one answer for the plot handed to this annotator (see next_plot). Returns after the
        commit (durable). Idempotent for identical retries."""
        from sqlalchemy import select
        from sqlalchemy.exc import IntegrityError

        # 1. Check inputs (plots are immutable, so this needs no transaction): a plot this annotator
        #    was handed, or answered already (a retry)
        plot = self.plot(plot_id)
        with self.engine.connect() as conn:
            if (not self._answered(conn, annotator_id, plot.id)
                    and self._handed(conn, annotator_id, plot.task_set_id) != plot.id):
                raise InputError(_not_handed(plot.id))
        clean = {} if skipped else parse_groups(groups, plot.n_points)
        text = json.dumps(clean, separators=(",", ":"))

        # 2. Return the stored answer for a retry
        def existing(conn):
            row = conn.execute(select(self.t_ann.c.id, self.t_ann.c.groups, self.t_ann.c.skipped).where(
                self.t_ann.c.annotator_id == annotator_id, self.t_ann.c.plot_id == plot.id)).first()
            if row is None:
                return None
            if bool(row.skipped) == bool(skipped) and row.groups == text:
                return SubmitResult(int(row.id), False, bool(skipped))
            what = "skipped" if row.skipped else "answered"
            raise InputError(f"plot {plot.id} was already {what} by you (annotation {row.id}); answers are final")

        # 3. Insert, committed before we return
        try:
            with self._write_lock, self._connect_write() as conn, conn.begin():
                prior = existing(conn)
                if prior is not None:
                    return prior
                if self._handed(conn, annotator_id, plot.task_set_id) != plot.id:
                    raise InputError(_not_handed(plot.id))
                started = conn.execute(select(self.t_views.c.started_at).where(
                    self.t_views.c.annotator_id == annotator_id, self.t_views.c.plot_id == plot.id)).scalar()
                aid = conn.execute(self.t_ann.insert().values(
                    annotator_id=annotator_id, plot_id=plot.id, skipped=bool(skipped), groups=text,
                    started_at=started, submitted_at=_now())).inserted_primary_key[0]
        except IntegrityError:  # a concurrent identical retry from another process won the race
            with self.engine.connect() as conn:
                prior = existing(conn)
            if prior is None:
                raise
            return prior
        return SubmitResult(int(aid), True, bool(skipped))

    def progress(self, annotator_id: int, task_set_id: int) -> dict:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(self.t_plots)
                                 .where(self.t_plots.c.task_set_id == task_set_id)).scalar()
            q = (select(self.t_ann.c.skipped, func.count()).select_from(self.t_ann.join(self.t_plots))
                 .where(self.t_ann.c.annotator_id == annotator_id, self.t_plots.c.task_set_id == task_set_id)
                 .group_by(self.t_ann.c.skipped))
            by = {bool(s): int(n) for s, n in conn.execute(q)}
        return {"total": int(total), "submitted": by.get(False, 0), "skipped": by.get(True, 0),
                "remaining": int(total) - by.get(False, 0) - by.get(True, 0)}

    # -- admin: progress, answers, export ----------------------------------------------
    def set_progress(self, task_set_id: int) -> pandas.DataFrame:  # noqa: F821
        import pandas as pd
        from sqlalchemy import case, func, select

        with self.engine.connect() as conn:
            target = conn.execute(select(self.t_sets.c.target_annotators).where(self.t_sets.c.id == task_set_id)).scalar()
            q = (select(self.t_plots.c.id, self.t_plots.c.position, self.t_plots.c.n_points,
                        func.count(self.t_ann.c.id).label("answers"),
                        func.coalesce(func.sum(case((self.t_ann.c.skipped.is_(True), 1), else_=0)), 0).label("skips"),
                        func.avg(self.t_ann.c.submitted_at - self.t_ann.c.started_at).label("mean_seconds"))
                 .select_from(self.t_plots.outerjoin(self.t_ann, self.t_ann.c.plot_id == self.t_plots.c.id))
                 .where(self.t_plots.c.task_set_id == task_set_id)
                 .group_by(self.t_plots.c.id).order_by(self.t_plots.c.position))
            df = pd.DataFrame([dict(r._mapping) for r in conn.execute(q)],
                              columns=["id", "position", "n_points", "answers", "skips", "mean_seconds"])
        df = df.rename(columns={"id": "plot_id"})
        df["answers"] = df["answers"] - df["skips"]
        df["target"] = target
        df["complete"] = df["answers"] >= df["target"]
        df["mean_seconds"] = df["mean_seconds"].astype(float).round(1)
        return df

    def annotator_progress(self, task_set_id: int) -> pandas.DataFrame:  # noqa: F821
        """Per annotator in a task set: answers, skips, mean seconds per answer, last submission."""
        import pandas as pd
        from sqlalchemy import case, func, select

        q = (select(self.t_annotators.c.name.label("annotator"),
                    func.sum(case((self.t_ann.c.skipped.is_(False), 1), else_=0)).label("answers"),
                    func.sum(case((self.t_ann.c.skipped.is_(True), 1), else_=0)).label("skips"),
                    func.avg(self.t_ann.c.submitted_at - self.t_ann.c.started_at).label("mean_seconds"),
                    func.max(self.t_ann.c.submitted_at).label("last"))
             .select_from(self.t_ann.join(self.t_annotators).join(self.t_plots))
             .where(self.t_plots.c.task_set_id == task_set_id)
             .group_by(self.t_annotators.c.name).order_by(self.t_annotators.c.name))
        with self.engine.connect() as conn:
            df = pd.DataFrame([dict(r._mapping) for r in conn.execute(q)],
                              columns=["annotator", "answers", "skips", "mean_seconds", "last"])
        df["mean_seconds"] = df["mean_seconds"].astype(float).round(1)
        df["last"] = pd.to_datetime(df["last"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
        return df

    def annotations(self, task_set_id: int | None = None, *, include_skipped: bool = False) -> list[dict]:
        """Answers with annotator names: id, plot_id, annotator, skipped, groups, started_at, submitted_at."""
        from sqlalchemy import select

        q = (select(self.t_ann, self.t_annotators.c.name.label("annotator"), self.t_plots.c.task_set_id)
             .select_from(self.t_ann.join(self.t_annotators).join(self.t_plots))
             .order_by(self.t_ann.c.id))
        if task_set_id is not None:
            q = q.where(self.t_plots.c.task_set_id == task_set_id)
        if not include_skipped:
            q = q.where(self.t_ann.c.skipped.is_(False))
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [{"id": r.id, "plot_id": r.plot_id, "task_set_id": r.task_set_id, "annotator": r.annotator,
                 "annotator_id": r.annotator_id, "skipped": bool(r.skipped), "groups": json.loads(r.groups),
                 "started_at": r.started_at, "submitted_at": r.submitted_at} for r in rows]

    def count_annotations(self) -> int:
        from sqlalchemy import func, select

        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(self.t_ann)).scalar())

    def export_frame(self, task_set_id: int | None = None) -> pandas.DataFrame:  # noqa: F821
        """One row per point per (non-skipped) annotation."""
        import pandas as pd

        sets = {t["id"]: t["name"] for t in self.task_sets()}
        plots: dict[int, Plot] = {}
        cols: dict[str, list] = {k: [] for k in (
            "task_set", "plot_id", "plot_position", "annotation_id", "annotator", "point_id", "source_id", "x", "y",
            "group", "truth", "started_at", "submitted_at", "seconds")}
        for a in self.annotations(task_set_id):
            p = plots.get(a["plot_id"]) or plots.setdefault(a["plot_id"], self.plot(a["plot_id"]))
            n = p.n_points
            labels = groups_to_labels(a["groups"], n)
            secs = None if a["started_at"] is None else round(a["submitted_at"] - a["started_at"], 3)
            cols["task_set"] += [sets.get(p.task_set_id, "")] * n
            cols["plot_id"] += [p.id] * n
            cols["plot_position"] += [p.position] * n
            cols["annotation_id"] += [a["id"]] * n
            cols["annotator"] += [a["annotator"]] * n
            cols["point_id"] += list(range(n))
            cols["source_id"] += list(p.source_ids)
            cols["x"] += p.xy[:, 0].tolist()
            cols["y"] += p.xy[:, 1].tolist()
            cols["group"] += labels
            cols["truth"] += list(p.truth) if p.truth is not None else [None] * n
            cols["started_at"] += [a["started_at"]] * n
            cols["submitted_at"] += [a["submitted_at"]] * n
            cols["seconds"] += [secs] * n
        df = pd.DataFrame(cols)
        df["truth"] = df["truth"].astype("Int64")
        return df

    def export(self, path, fmt: str, task_set_id: int | None = None) -> int:
        """Write the export as jsonl | csv | parquet; returns the number of rows."""
        fmt = (fmt or "").lower().lstrip(".")
        if fmt not in ("jsonl", "csv", "parquet"):
            raise InputError(f"export format must be one of jsonl, csv, parquet, but is {fmt!r}")
        df = self.export_frame(task_set_id)
        if fmt == "jsonl":
            df.to_json(path, orient="records", lines=True)
        elif fmt == "csv":
            csv_safe(df).to_csv(path, index=False)  # names and ids are text from outside: no formulas
        else:
            df.to_parquet(path, index=False)
        return len(df)

    # -- health -------------------------------------------------------------------------
    def integrity_check(self) -> str:
        if not self.is_sqlite:
            return "ok"
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA integrity_check").scalar())

    def journal_mode(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    def close(self) -> None:
        self.engine.dispose()
        with _STORES_LOCK:
            if _STORES.get(self.url) is self:
                del _STORES[self.url]


def _not_handed(plot_id: int) -> str:
    return (f"plot {plot_id} is not the plot you were given: answer the plot shown to you "
            "(sign in to its task set again to see it)")


def escape_formula(value):
    """A text cell that a spreadsheet would run as a formula (it starts with = + - @, a tab or a
    carriage return) with a leading single quote, as OWASP advises; anything else unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_safe(df: pandas.DataFrame) -> pandas.DataFrame:  # noqa: F821
    """A copy of df for CSV: every text cell and column name through escape_formula. Numbers stay
    numbers (-1.5 is a value, not a formula)."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        dtype = out[col].dtype
        if pd.api.types.is_object_dtype(dtype) or isinstance(dtype, (pd.StringDtype, pd.CategoricalDtype)):
            out[col] = out[col].astype(object).map(escape_formula)
    out.columns = [escape_formula(c) for c in out.columns]
    return out


def _plot_from_row(row) -> Plot:
    pts = json.loads(row.points)
    xy = np.column_stack([pts["x"], pts["y"]]).astype(np.float32)
    return Plot(int(row.id), int(row.task_set_id), int(row.position), xy, pts["source_ids"], pts.get("truth"),
                json.loads(row.meta))


@lru_cache(maxsize=4096)
def _pbkdf2(salt: bytes, iterations: int, token: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", token.encode(), salt, iterations).hex()


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def new_token() -> str:
    """A random 128-bit token for an annotator."""
    return secrets.token_urlsafe(16)


def check_password(given: str, expected: str) -> None:
    """Admin password check; raises AuthError. An empty expected password disables admin."""
    if not expected:
        raise AuthError("admin is disabled: set LATENT_ATLAS_ADMIN_PASSWORD (or Settings.admin_password)")
    if not hmac.compare_digest((given or "").encode(), expected.encode()):
        raise AuthError("wrong admin password")

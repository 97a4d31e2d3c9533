"""The usage writer: one background task per process that stores record bundles in batches.

A finished request calls :meth:`UsageWriter.submit`, which never waits: it puts the bundle on a
bounded queue, or, when the queue is full, appends it to the spool file (counted; a bundle is dropped
only if even that write fails). The task takes batches (``batch_size`` bundles, twice that when
it is behind, or whatever arrived within ``flush_interval``) and writes each in one transaction: the
usage records, their attempts and request logs, and the hourly rollup and spend increments folded
over the batch.

If the database fails, the batch goes to a local spool (JSON lines files in ``spool_dir``) and later
batches follow it there until a retry succeeds (backing off up to ``retry_max`` seconds); the spool is
then replayed oldest first, before new batches. Replays are idempotent, so a batch whose commit was
lost in the failure (written, but not known to be) is never counted twice: records are inserted with
``ON CONFLICT (request_id) DO NOTHING ... RETURNING request_id`` and only the rows actually inserted
get attempts, logs, rollup and spend increments.

When more than ``backlog_high`` bundles wait (the process is saturated and the task, sharing its CPU
with the request path, falls behind), new requests wait in :meth:`UsageWriter.room`, at most
``room_wait``, until the task has brought the queue back to ``batch_size``: under sustained overload
the gateway slows to the rate it can account for instead of holding an ever longer queue in memory.
A task that has not finished a batch for ``stalled_after`` seconds (a database that hangs) holds
nobody up: the queue and the spool are there for that.

On :meth:`UsageWriter.stop` the queue is drained (to the database, or to the spool when it is down or
the timeout is reached), so a graceful shutdown loses nothing.

Several processes may share ``spool_dir``: each appends to its own segment file, holding an exclusive
``flock`` on it while it is open; a replay takes the same lock, so a segment is never replayed while
it is still being written, and never by two processes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson
from sqlalchemy import Table, text
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from isthmus.accounting.records import RecordBundle, UsageRecord
from isthmus.accounting.rollups import (
    RollupDelta,
    RollupKey,
    SpendDelta,
    SpendKey,
    fold_rollups,
    fold_spend,
    upsert_rollups,
    upsert_spend,
)
from isthmus.store.bulk import BulkInsert, RowShape
from isthmus.store.usage_tables import RequestLogRow, UsageAttemptRow, UsageRecordRow

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per spool directory
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("isthmus.accounting.writer")

_T = TypeVar("_T")

SPOOL_SUFFIX = ".jsonl"
REJECTED_NAME = "rejected.ndjson"


@dataclass(slots=True)
class WriterStats:
    submitted: int = 0
    written: int = 0  # records inserted (a replayed duplicate is not counted again)
    duplicates: int = 0  # records already in the database when written (replays after a lost commit)
    spooled: int = 0  # bundles appended to the spool (database down, queue full, or shutdown)
    overflowed: int = 0  # of which because the queue was full
    replayed: int = 0  # bundles read back from the spool and written
    dropped: int = 0  # bundles lost: queue full and the spool unwritable
    rejected: int = 0  # bundles the database refused as invalid, kept in rejected.jsonl
    flush_failures: int = 0
    throttled: int = 0  # requests that waited for the backlog to come down
    database_up: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- Spool files ------------------------------------------------------------------------------


class Spool:
    """Append-only JSON lines segments in one directory; each process writes only its own segment."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._file: IO[bytes] | None = None
        self._path: Path | None = None
        self._seq = 0

    def _open(self) -> IO[bytes]:
        if self._file is not None:
            return self._file
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seq += 1
        # Names sort by creation time: replay order is oldest first.
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}{SPOOL_SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        handle = os.fdopen(fd, "ab")
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._file, self._path = handle, path
        return handle

    def append(self, bundles: Sequence[RecordBundle]) -> None:
        if not bundles:
            return
        handle = self._open()
        handle.write(b"".join(orjson.dumps(b.to_json()) + b"\n" for b in bundles))
        # Flushed to the OS (survives a crash of this process); fsync'd when the segment is sealed.
        handle.flush()

    def seal(self) -> None:
        """Close the current segment so it can be replayed."""
        if self._file is None:
            return
        handle, self._file, self._path = self._file, None, None
        try:
            handle.flush()
            os.fsync(handle.fileno())
        finally:
            handle.close()  # releases the flock

    def segments(self) -> list[Path]:
        """Sealed segments (of every process sharing the directory), oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(
            p
            for p in self.directory.iterdir()
            if p.name[:1].isdigit() and p.name.endswith(SPOOL_SUFFIX) and p != self._path
        )

    def has_pending(self) -> bool:
        return self._file is not None or bool(self.segments())

    def reject(self, bundle: RecordBundle, reason: str) -> None:
        """Keep a bundle the database refused (in ``rejected.ndjson``) for a human; it is never replayed."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / REJECTED_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(orjson.dumps({"reason": reason, "bundle": bundle.to_json()}) + b"\n")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[bytes] | None]:
    """The segment opened for reading under an exclusive lock; None if another process holds it."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        yield None
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
        yield handle
    finally:
        handle.close()


# --- Rows ---------------------------------------------------------------------------------------


def _table(model: type[Any]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_USAGE = _table(UsageRecordRow)
_ATTEMPTS = _table(UsageAttemptRow)
_LOGS = _table(RequestLogRow)


_USAGE_SHAPE = RowShape(_USAGE)
_ATTEMPT_SHAPE = RowShape(_ATTEMPTS)
_LOG_SHAPE = RowShape(_LOGS)
_MODEL_REQUESTED = _USAGE_SHAPE.columns.index("model_requested")


@dataclass(frozen=True, slots=True)
class _Inserts:
    """The batch INSERTs of one dialect, rendered once."""

    usage: BulkInsert  # ... ON CONFLICT (request_id) DO NOTHING RETURNING request_id
    attempts: BulkInsert
    logs: BulkInsert


@functools.lru_cache(maxsize=4)  # one or two engines per process; tests make many
def _inserts(dialect: Dialect) -> _Inserts:
    return _Inserts(
        usage=BulkInsert(_USAGE, dialect, conflict=("request_id",), returning="request_id"),
        attempts=BulkInsert(_ATTEMPTS, dialect),
        logs=BulkInsert(_LOGS, dialect),
    )


def _usage_row(record: UsageRecord, insert: BulkInsert) -> list[Any]:
    row = _USAGE_SHAPE.row(record)
    # The rollup key uses the model name too (same column size): fold the clipped value.
    record.model_requested = row[_MODEL_REQUESTED]
    return insert.bind(row)


# Batches at least this large are prepared (rows, rollup and spend folds) in a worker thread, so the
# loop keeps serving requests meanwhile; smaller ones are not worth the thread hop.
THREAD_MIN_BUNDLES = 64


@dataclass(slots=True)
class _Prepared:
    """Everything a batch writes besides the record rows, computed off the event loop."""

    attempts: list[list[Any]]
    logs: list[list[Any]]
    rollups: dict[RollupKey, RollupDelta]
    spend: dict[SpendKey, SpendDelta]


def _prepare_rows(bundles: Sequence[RecordBundle], inserts: _Inserts) -> list[list[Any]]:
    return [_usage_row(b.usage, inserts.usage) for b in bundles]


def _prepare_rest(bundles: Sequence[RecordBundle], inserts: _Inserts, tz: tzinfo) -> _Prepared:
    usage = [b.usage for b in bundles]
    attempts, logs = inserts.attempts, inserts.logs
    return _Prepared(
        attempts=[attempts.bind(_ATTEMPT_SHAPE.row(a)) for b in bundles for a in b.attempts],
        logs=[logs.bind(_LOG_SHAPE.row(b.log)) for b in bundles if b.log is not None],
        rollups=fold_rollups(usage),
        spend=fold_spend(usage, tz),
    )


def _prepare_all(
    bundles: Sequence[RecordBundle], inserts: _Inserts, tz: tzinfo
) -> tuple[list[list[Any]], _Prepared]:
    rows = _prepare_rows(bundles, inserts)  # first: it clips the model names the rollups fold
    return rows, _prepare_rest(bundles, inserts, tz)


async def _off_loop(bundles: Sequence[RecordBundle], fn: Callable[[], _T]) -> _T:
    if len(bundles) >= THREAD_MIN_BUNDLES:
        return await asyncio.to_thread(fn)
    return fn()


def rekey(bundle: RecordBundle) -> None:
    """Give a bundle a new, unique request id (``<id>~<random>``), in its trace and log too."""
    new_id = f"{bundle.request_id[:100]}~{secrets.token_hex(6)}"
    bundle.usage.request_id = new_id
    for attempt in bundle.attempts:
        attempt.request_id = new_id
    if bundle.log is not None:
        bundle.log.request_id = new_id


async def write_batch(
    session: AsyncSession, bundles: Sequence[RecordBundle], tz: tzinfo = UTC, *, fresh: bool = False
) -> int:
    """Store a batch inside the caller's transaction; returns how many records were new.

    Idempotent: records already present (same request id) are skipped together with their attempts,
    logs and increments, so writing the same batch twice changes nothing the second time.

    ``fresh`` says the bundles come straight from requests and were never written: a request id that is
    taken anyway (by an earlier bundle of the batch, or in the database) is then a client reusing its
    ``x-request-id``, and the record is stored under a new id rather than dropped — otherwise a client
    could keep its usage out of the records and the spend totals.

    The rows and folds are prepared in a worker thread for large batches (see ``THREAD_MIN_BUNDLES``)
    assuming every record is new, as they nearly always are; they are prepared again, for the new
    ones only, when some were not.
    """
    unique: dict[str, RecordBundle] = {}
    reused: list[RecordBundle] = []
    for bundle in bundles:
        if bundle.request_id not in unique:
            unique[bundle.request_id] = bundle
        elif fresh:
            reused.append(bundle)
    if not unique:
        return 0
    candidates = list(unique.values())
    inserts = _inserts(session.get_bind().dialect)
    rows, prepared = await _off_loop(candidates, lambda: _prepare_all(candidates, inserts, tz))
    inserted = set(await inserts.usage.execute(session, rows))
    new = [b for b in candidates if b.request_id in inserted]
    if fresh:
        reused += [b for b in candidates if b.request_id not in inserted]
        if reused:
            log.warning(
                "%d request id(s) reused by clients; their records are kept under new ids", len(reused)
            )
            for bundle in reused:
                rekey(bundle)
            again = set(await inserts.usage.execute(session, _prepare_rows(reused, inserts)))
            new += [b for b in reused if b.request_id in again]
    if not new:
        return 0
    if reused or len(new) != len(candidates):
        # Some records were already stored, or were given new ids (their attempts and logs too).
        prepared = await _off_loop(new, lambda: _prepare_rest(new, inserts, tz))
    if prepared.attempts:
        await inserts.attempts.execute(session, prepared.attempts)
    if prepared.logs:
        await inserts.logs.execute(session, prepared.logs)
    await upsert_rollups(session, prepared.rollups)
    await upsert_spend(session, prepared.spend)
    return len(new)


# --- The writer ---------------------------------------------------------------------------------


class UsageWriter:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        queue_max: int = 50_000,
        *,
        backlog_high: int = 1_000,
        room_wait: float = 1.0,
        stalled_after: float = 5.0,
        spend_timezone: tzinfo = UTC,
        retry_min: float = 0.5,
        retry_max: float = 30.0,
        write_timeout: float = 60.0,
    ) -> None:
        self._sessions = session_factory
        self._spool = Spool(spool_dir)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.spend_timezone = spend_timezone
        self._retry_min = retry_min
        self._retry_max = retry_max
        self._write_timeout = write_timeout
        self._queue: asyncio.Queue[RecordBundle | None] = asyncio.Queue(maxsize=queue_max)
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[RecordBundle] = []
        self._taken = 0  # queue items taken for the batch in hand (task_done owed for each)
        self._stopping = False
        self._closed = False
        self._retry_at = 0.0
        self._backoff = retry_min
        self.backlog_high = backlog_high
        self.room_wait = room_wait
        self.stalled_after = stalled_after
        self._room: asyncio.Event | None = None  # set when a congested backlog is back down
        self._progress_at = 0.0  # when the task last finished a batch
        self._filled: asyncio.Event | None = None  # set once ``_wanted`` more bundles are queued
        self._wanted = 0
        self.stats = WriterStats()

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # --- request path -----------------------------------------------------------------------

    @property
    def congested(self) -> bool:
        return self._queue.qsize() > self.backlog_high

    async def room(self) -> None:
        """Wait, at most ``room_wait``, until a congested backlog is back down to ``batch_size``.
        Returns at once when it is not congested, or when the task has finished no batch for
        ``stalled_after`` seconds (a big batch on a saturated core takes a while; a hung database
        longer)."""
        if not self.congested or self._closed or time.monotonic() - self._progress_at > self.stalled_after:
            return
        room = self._room
        if room is None:
            room = self._room = asyncio.Event()
        self.stats.throttled += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(room.wait(), self.room_wait)

    def submit(self, bundle: RecordBundle) -> bool:
        """Hand over a finished request's records; never waits. False only if the bundle was lost."""
        self.stats.submitted += 1
        if not self._closed:
            try:
                self._queue.put_nowait(bundle)
            except asyncio.QueueFull:
                self.stats.overflowed += 1
            else:
                filled = self._filled
                if filled is not None and self._queue.qsize() >= self._wanted:
                    filled.set()
                return True
            return self._spool_now([bundle])
        # Stopped: nobody here will replay it, so seal it at once for the next writer to find.
        kept = self._spool_now([bundle])
        self._spool.seal()
        return kept

    def _spool_now(self, bundles: Sequence[RecordBundle]) -> bool:
        try:
            self._spool.append(bundles)
        except OSError:
            log.exception(
                "cannot write the usage spool in %s; %d record(s) lost", self.spool_dir, len(bundles)
            )
            self.stats.dropped += len(bundles)
            return False
        self.stats.spooled += len(bundles)
        return True

    # --- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="isthmus-usage-writer")

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline for the drain
        """Drain the queue and flush (to the spool when the database is down or time runs out)."""
        self._stopping = True
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)  # wakes the task; when full it is busy anyway
            if self._filled is not None:
                self._filled.set()  # a batch being filled closes now
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("the usage writer failed while stopping")
        self._closed = True
        if self._room is not None:  # nobody waits on a writer that is gone
            self._room.set()
            self._room = None
        leftovers = [*self._inflight, *self._drain_queue()]
        self._inflight = []
        if leftovers:
            self._spool_now(leftovers)
        self._spool.seal()

    def _drain_queue(self) -> list[RecordBundle]:
        out: list[RecordBundle] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return out
            if item is not None:
                out.append(item)

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (or spooled, if the database is down).
        Returns at once if the task is not running (nothing would ever take the queue)."""
        if self._task is None or self._task.done():
            return
        await self._queue.join()

    # --- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._taken = 0
            batch = await self._next_batch()
            self._inflight = batch
            try:
                if not self._stopping and self._database_may_answer() and self._spool.has_pending():
                    await self._replay()
                if batch:
                    await self._store(batch)
            except Exception:
                # Never let the task die: whatever is in hand goes to the spool.
                log.exception("unexpected error in the usage writer")
                if batch:
                    self._spool_now(batch)
            self._inflight = []
            for _ in range(self._taken):
                self._queue.task_done()
            self._progress_at = time.monotonic()
            room = self._room
            if room is not None and self._queue.qsize() <= self.batch_size:
                self._room = None
                room.set()
            if self._stopping and self._queue.empty():
                return

    async def _next_batch(self) -> list[RecordBundle]:
        """Up to ``batch_size`` bundles (2× when that many already wait): as many as arrive within
        ``flush_interval`` of the first."""
        batch: list[RecordBundle] = []
        try:
            first = await asyncio.wait_for(self._queue.get(), self.flush_interval)
        except TimeoutError:
            return batch
        self._taken += 1
        if first is not None:
            batch.append(first)
        deadline = time.monotonic() + self.flush_interval
        # Behind: bigger batches, so the per-transaction round trips are paid over more records.
        limit = self.batch_size if self._queue.qsize() < self.batch_size else 2 * self.batch_size
        while True:
            self._take_queued(batch, limit)
            remaining = deadline - time.monotonic()
            if len(batch) >= limit or remaining <= 0 or self._stopping:
                return batch
            # Sleep until enough have arrived to fill the batch (``submit`` says so) or the deadline:
            # woken for each record as it came, the task cost a task, a timer and a loop turn apiece.
            filled = self._filled = asyncio.Event()
            self._wanted = limit - len(batch)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(filled.wait(), remaining)
            self._filled = None

    def _take_queued(self, batch: list[RecordBundle], limit: int) -> None:
        queue = self._queue
        while len(batch) < limit:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._taken += 1
            if item is not None:
                batch.append(item)

    def _database_may_answer(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _database_failed(self, exc: BaseException) -> None:
        self.stats.flush_failures += 1
        if self.stats.database_up:
            log.warning("usage database unavailable (%s); spooling to %s", _describe(exc), self.spool_dir)
        self.stats.database_up = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)

    def _database_answered(self) -> None:
        if not self.stats.database_up:
            log.info("usage database reachable again")
        self.stats.database_up = True
        self._backoff = self._retry_min
        self._retry_at = 0.0

    async def _write(self, batch: Sequence[RecordBundle], *, fresh: bool) -> int:
        async def work() -> int:
            async with self._sessions() as session, session.begin():
                return await write_batch(session, batch, self.spend_timezone, fresh=fresh)

        return await asyncio.wait_for(work(), self._write_timeout)

    async def _store(self, batch: list[RecordBundle]) -> None:
        if not self._database_may_answer():
            self._spool_now(batch)
            return
        await self._commit(batch, spool_on_outage=True, fresh=True)

    async def _commit(self, batch: Sequence[RecordBundle], *, spool_on_outage: bool, fresh: bool) -> bool:
        """Write a batch. True when it is settled: written, with any bundle the database refuses set
        aside in ``rejected.ndjson``. False on an outage; the batch, or what is left of it, then goes to
        the spool if ``spool_on_outage`` (a replay leaves it in its segment instead). ``fresh``: the
        batch comes from the queue, not the spool (see :func:`write_batch`)."""
        try:
            new = await self._write(batch, fresh=fresh)
        except Exception as exc:
            if await self._is_outage(exc):
                self._database_failed(exc)
                if spool_on_outage:
                    self._spool_now(batch)
                return False
            self._database_answered()
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return True
            # Some bundle is invalid: find it without holding back the others.
            log.warning("a usage batch was refused (%s); writing its records one by one", _describe(exc))
            for index, bundle in enumerate(batch):
                if not await self._commit([bundle], spool_on_outage=False, fresh=fresh):
                    if spool_on_outage:
                        self._spool_now(batch[index:])
                    return False
            return True
        self._database_answered()
        self.stats.written += new
        self.stats.duplicates += len(batch) - new
        return True

    async def _is_outage(self, exc: BaseException) -> bool:
        """Whether a failed write means "database unavailable" (spool, retry later) rather than "this
        data is refused". When the error does not say, the database is asked whether it answers."""
        if isinstance(exc, TimeoutError | OSError | OperationalError | InterfaceError | ProgrammingError):
            # ProgrammingError here is a schema problem (migrations not run yet): keep everything.
            return True
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, IntegrityError | DataError):
            return False
        try:
            async with self._sessions() as session:
                await asyncio.wait_for(session.execute(text("SELECT 1")), 10)
        except Exception:
            return True
        return False

    def _reject(self, bundle: RecordBundle, exc: BaseException) -> None:
        self.stats.rejected += 1
        log.error("usage record %s rejected by the database: %s", bundle.request_id, _describe(exc))
        try:
            self._spool.reject(bundle, _describe(exc))
        except OSError:
            self.stats.dropped += 1

    async def _replay(self) -> None:
        """Write sealed spool segments back, oldest first; stop at the first database failure."""
        self._spool.seal()
        for path in self._spool.segments():
            with _locked(path) as handle:
                if handle is None:
                    continue  # another process is writing or replaying it
                if not await self._replay_segment(path, handle):
                    return
                path.unlink(missing_ok=True)
            log.info("replayed usage spool segment %s", path.name)

    async def _replay_segment(self, path: Path, handle: IO[bytes]) -> bool:
        batch: list[RecordBundle] = []
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                batch.append(RecordBundle.from_json(orjson.loads(line)))
            except (ValueError, TypeError, KeyError) as exc:
                # A torn last line (the process died mid-write) or a hand-edited file.
                log.error("skipping unreadable line %d of spool segment %s: %s", number, path.name, exc)
                continue
            if len(batch) >= self.batch_size:
                if not await self._replay_batch(batch):
                    return False
                batch = []
        return not batch or await self._replay_batch(batch)

    async def _replay_batch(self, batch: list[RecordBundle]) -> bool:
        before = self.stats.written
        settled = await self._commit(batch, spool_on_outage=False, fresh=False)
        self.stats.replayed += self.stats.written - before
        return settled


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = ["Spool", "UsageWriter", "WriterStats", "write_batch"]

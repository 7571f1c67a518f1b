"""The library's database: one SQLite file holding every table of the app (documents, datasets, jobs, models,
conversations, hosts), the migrations that make its schema, and the one way to write to it.

WAL with synchronous=FULL and one transaction per change, so a crash, a kill or a power cut leaves every
change either fully there or not there at all (docs/data-model.md).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Self

import sqlite_utils
from sqlite_utils.migrations import Migrations

from core.errors import KnownError
from core.library.chunking import index_context
from core.library.folder import DATABASE, LOCK, RESERVE, check_folder, make_private

# Room kept aside on the library's disk while it has plenty, and given back when it is nearly full, so that
# removing documents (which SQLite must write before it frees anything) still works on a full disk: removing a
# 50-page contract wrote 0.4 MB of WAL, so this is room to remove some 500 pages at once.
RESERVE_BYTES = 4 << 20
_OPENING = threading.Lock()
migrations = Migrations("tunedesk")
_TOKENIZER = "porter unicode61 remove_diacritics 2"  # stems, so "assigns" finds "assigned"


@migrations()
def m001_documents(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: an id is never reused, so a citation kept in a conversation cannot come to point at
    # another document's chunk after a removal.
    db.executescript(
        """
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sha256 TEXT NOT NULL UNIQUE,   -- of the file's bytes: the same file is never added twice
            name TEXT NOT NULL UNIQUE,     -- shown in citations; "contract (2).pdf" for a second one
            kind TEXT NOT NULL,            -- pdf, docx or text
            bytes INTEGER NOT NULL,
            title TEXT,
            source TEXT NOT NULL,          -- the path it was added from
            added TEXT NOT NULL
        );
        CREATE TABLE pages (
            document_id INTEGER NOT NULL REFERENCES documents(id),
            number INTEGER NOT NULL,       -- 1-based, as printed in citations
            start INTEGER NOT NULL,        -- offset in the document text (core.library.chunking.PAGE_SEPARATOR)
            text TEXT NOT NULL,
            PRIMARY KEY (document_id, number)
        );
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            document_id INTEGER NOT NULL REFERENCES documents(id),
            page_first INTEGER NOT NULL,
            page_last INTEGER NOT NULL,
            start INTEGER NOT NULL,
            end INTEGER NOT NULL,
            text TEXT NOT NULL
        );
        CREATE INDEX chunks_document ON chunks(document_id);
        """
    )
    db.table("chunks").enable_fts(["text"], fts_version="FTS5", tokenize=_TOKENIZER, create_triggers=True)


@migrations()
def m002_training(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE qa_pairs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            chunk_id INTEGER NOT NULL REFERENCES chunks(id),  -- the passage that answers it
            page INTEGER NOT NULL,         -- where the answer is, for the citation
            question TEXT NOT NULL,
            answer TEXT NOT NULL,
            source TEXT NOT NULL,          -- extractive, model:NAME.gguf or import:FILE
            created TEXT NOT NULL
        );
        CREATE INDEX qa_pairs_chunk ON qa_pairs(chunk_id);
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            dir TEXT NOT NULL,             -- train.jsonl, val.jsonl, held_out.jsonl, dataset.json
            created TEXT NOT NULL,
            settings TEXT NOT NULL,        -- JSON: core.dataset.build.DatasetSettings
            train_examples INTEGER NOT NULL,
            val_examples INTEGER NOT NULL
        );
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            dir TEXT NOT NULL,             -- the job directory (core/jobdir/layout.py)
            state TEXT NOT NULL,           -- running, done, failed or cancelled
            created TEXT NOT NULL,
            base TEXT NOT NULL,            -- as the user named it: demo, a folder or a hub id
            host TEXT NOT NULL,            -- local, or a remote host's name
            dataset_id INTEGER REFERENCES datasets(id),
            steps_total INTEGER,
            step INTEGER NOT NULL DEFAULT 0,
            message TEXT,                  -- why it failed, in one sentence
            events_offset INTEGER NOT NULL DEFAULT 0  -- how far events.jsonl has been read
        );
        CREATE TABLE losses (
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            step INTEGER NOT NULL,
            train_loss REAL,
            val_loss REAL,
            PRIMARY KEY (job_id, step)
        );
        CREATE TABLE checkpoints (
            job_id INTEGER NOT NULL REFERENCES jobs(id),
            step INTEGER NOT NULL,
            path TEXT NOT NULL,            -- relative to the job directory
            val_loss REAL,
            answer_score REAL,
            PRIMARY KEY (job_id, step)
        );
        """
    )


@migrations()
def m003_models(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE models (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            path TEXT NOT NULL UNIQUE,     -- a GGUF file
            quant TEXT,                    -- q4_k_m, q5_k_m, q8_0, f16; unknown for an imported file
            bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            source TEXT NOT NULL,          -- export or import
            job_id INTEGER REFERENCES jobs(id),
            step INTEGER,                  -- the checkpoint it was exported from
            details TEXT,                  -- JSON: verification agreement, tensor types, fallbacks
            created TEXT NOT NULL
        );
        """
    )


@migrations()
def m004_conversations(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model TEXT NOT NULL,           -- the GGUF file's name when the conversation began
            title TEXT NOT NULL,           -- its first question
            created TEXT NOT NULL
        );
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
            role TEXT NOT NULL,            -- user or assistant
            content TEXT NOT NULL,
            supported INTEGER,             -- an answer: 1 when every citation was backed
            created TEXT NOT NULL
        );
        CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
        -- No foreign key to chunks: a citation outlives the document's removal, and says so.
        CREATE TABLE citations (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            document TEXT NOT NULL,
            page_first INTEGER NOT NULL,
            page_last INTEGER NOT NULL,
            chunk_id INTEGER NOT NULL,
            quote TEXT
        );
        CREATE INDEX citations_by_message ON citations(message_id);
        """
    )


@migrations()
def m005_hosts(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            address TEXT NOT NULL,
            port INTEGER NOT NULL,
            key TEXT,                      -- a private key file; NULL: the SSH agent and ~/.ssh's keys
            python TEXT NOT NULL,          -- the Python the engine runs with there
            workdir TEXT NOT NULL,         -- where jobs run there (wiped when they end) and the engine's code
            price_per_hour REAL,           -- USD, for the cost of a job
            added TEXT NOT NULL
        );
        """
    )


@migrations()
def m006_chunk_context(db: sqlite_utils.Database) -> None:
    # Search indexes each chunk's place in its document beside its text (core.library.chunking.index_context), so
    # the index gets a second column and is built again.
    db.execute("ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''")
    rows = db.execute("SELECT id, start FROM chunks").fetchall()
    db.conn.executemany(
        "UPDATE chunks SET context = ? WHERE id = ?", [(index_context(start), id) for id, start in rows]
    )
    db.table("chunks").disable_fts()
    db.table("chunks").enable_fts(["text", "context"], fts_version="FTS5", tokenize=_TOKENIZER, create_triggers=True)


@migrations()
def m007_job_processes(db: sqlite_utils.Database) -> None:
    # How many processes the engine trains a job with (torch.distributed), from its start event.
    db.execute("ALTER TABLE jobs ADD COLUMN processes INTEGER")


@migrations()
def m008_replaced(db: sqlite_utils.Database) -> None:
    # The versions of documents that a newer one replaced (`add --replaces`): the models made from them are
    # out of date, whatever the new version is named.
    db.execute(
        "CREATE TABLE replaced (sha256 TEXT PRIMARY KEY, name TEXT NOT NULL, by_sha256 TEXT NOT NULL, "
        "replaced TEXT NOT NULL)"
    )


@migrations()
def m009_paths_in_the_library(db: sqlite_utils.Database) -> None:
    # Paths in the library's folder are kept relative to it (LibraryDatabase.stored_path): a copied, moved or
    # restored library must drive its own jobs, not the original's. Each of these lies where its id says.
    db.execute("UPDATE jobs SET dir = 'jobs/' || id")
    db.execute("UPDATE datasets SET dir = 'datasets/' || id")
    rows = db.execute("SELECT id, path, job_id FROM models WHERE source = 'export'").fetchall()
    db.conn.executemany(
        "UPDATE models SET path = ? WHERE id = ?",
        [(f"jobs/{job_id}/exports/{PurePath(path).name}", id) for id, path, job_id in rows],
    )


@migrations()
def m010_answer_sources(db: sqlite_utils.Database) -> None:
    # The passages an answer was given, so that the user can check it against them (also in a conversation
    # opened later); like citations, they outlive their document's removal. A stopped answer is not the
    # model's whole answer and is not judged as one.
    db.executescript(
        """
        CREATE TABLE message_passages (
            message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
            rank INTEGER NOT NULL,         -- 1: search's best
            document TEXT NOT NULL,
            page_first INTEGER NOT NULL,
            page_last INTEGER NOT NULL,
            chunk_id INTEGER NOT NULL
        );
        CREATE INDEX message_passages_by_message ON message_passages(message_id);
        ALTER TABLE messages ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0;
        """
    )


@migrations()
def m011_pages_read_by_ocr(db: sqlite_utils.Database) -> None:
    # A scan's pages are read by OCR (core/library/ocr.py); their text is marked as such, and a page whose
    # OCR confidence is low is shown as unsure.
    db.executescript(
        """
        ALTER TABLE pages ADD COLUMN ocr INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE pages ADD COLUMN ocr_confidence REAL;  -- 0-1; NULL for text-layer pages and blank scans
        ALTER TABLE pages ADD COLUMN ocr_words TEXT;  -- JSON: core.library.ocr.Word for each word OCR read
        """
    )


class LibraryError(KnownError):
    """The library itself cannot be used (busy, full, read-only, damaged): no other file would fare better."""


class LibraryDatabase:
    """The library's SQLite database in `data_dir`, its schema migrated. Not thread-safe: give each thread its own."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        path = data_dir / DATABASE
        try:
            # One opening at a time in a process: the window's tasks start together, and two threads making
            # one new library saw each other's half-made folder as not a library, or found it busy
            # (15 of 60 pairs on a slow machine).
            with _OPENING:
                existed = path.exists()
                check_folder(data_dir)
                data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                # A library made by an earlier version, or copied in, may be readable by other users.
                self.tightened = existed and make_private(data_dir)
                _balance_reserve(data_dir)
                self.db = sqlite_utils.Database(path)
                self.db.execute("PRAGMA busy_timeout = 5000")
                self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = FULL")
                self.db.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except sqlite3.Error as error:
            raise known_error(error, path) from error
        except OSError as error:
            raise KnownError(f"The library folder {data_dir} cannot be used: {error.strerror}.") from error

    def close(self) -> None:
        self.db.close()

    def check_room(self, needed: int, what: str) -> None:
        """Refuse to write `needed` bytes into the room kept aside for removals: once the reserve was given
        back on a nearly full disk, an add would spend it and leave `rm` none."""
        room = shutil.disk_usage(self.data_dir).free - (0 if (self.data_dir / RESERVE).exists() else RESERVE_BYTES)
        if room < needed:
            raise LibraryError(
                f"{what} needs about {needed / 1e6:.1f} MB and the library's disk is nearly full; free some "
                "room (removing documents works), then try again."
            )

    def stored_path(self, path: Path | str) -> str:
        """`path` as the library keeps it: relative to its folder where it lies inside, so that a copy of the
        library points at its own files; absolute elsewhere (a model file the user imported)."""
        resolved = Path(path).resolve()
        try:
            return str(resolved.relative_to(self.data_dir.resolve()))
        except ValueError:
            return str(resolved)

    def full_path(self, stored: str) -> Path:
        return self.data_dir / stored

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front, so two writers wait for
        each other (up to busy_timeout) instead of failing halfway; sqlite-utils calls inside nest as
        savepoints."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.rollback()
                raise
            self.db.execute("COMMIT")
        except sqlite3.Error as error:
            self.db.rollback()
            raise known_error(error, self.data_dir / DATABASE) from error

    def _migrate(self) -> None:
        known = {migration.name for migration in migrations._migrations}
        applied = migrations.applied(self.db)
        unknown = [migration.name for migration in applied if migration.name not in known]
        if unknown:
            raise KnownError(
                f"The library at {self.data_dir} was written by a newer version of Tunedesk "
                f"(schema {unknown[-1]}); update Tunedesk to open it."
            )
        if not migrations.pending(self.db):
            return
        # Two openers of one library (the app's threads, the CLI beside it) must not both migrate it: a
        # migration's script commits as it goes, so only a lock held across it keeps the second one out.
        with open(self.data_dir / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            applied, pending = migrations.applied(self.db), migrations.pending(self.db)
            if not pending:  # the other opener did it while this one waited
                return
            if applied:
                # A migration that goes wrong must not cost the user their library.
                backup = self.data_dir / f"{DATABASE}.before-{pending[0].name}"
                backup.unlink(missing_ok=True)
                self.db.execute("VACUUM INTO ?", [str(backup)])
            migrations.apply(self.db)
            self.db.execute(f"PRAGMA user_version = {len(applied) + len(pending)}")


def known_error(error: sqlite3.Error, path: Path) -> LibraryError:
    """The one sentence for an SQLite failure caused by the environment; other failures are bugs."""
    reasons = {
        "SQLITE_BUSY": "is busy: another Tunedesk is writing to it; try again when it has finished",
        "SQLITE_LOCKED": "is busy: another Tunedesk is writing to it; try again when it has finished",
        "SQLITE_READONLY": "is read-only; check the permissions of its folder",
        "SQLITE_FULL": "cannot grow: the disk is full",
        "SQLITE_CORRUPT": "is damaged (restore it from a backup, or move it away to start a new one)",
        "SQLITE_NOTADB": "is not a Tunedesk library (it is not an SQLite database)",
        "SQLITE_CANTOPEN": "cannot be opened; check that its folder exists and is writable",
        "SQLITE_IOERR": "could not be read or written (a disk error)",
        "SQLITE_PERM": "cannot be opened: permission denied",
    }
    code = getattr(error, "sqlite_errorname", "")
    reason = next((text for prefix, text in reasons.items() if code.startswith(prefix)), None)
    if reason is None:
        raise error
    return LibraryError(f"The library {path} {reason}.")


def _balance_reserve(data_dir: Path) -> None:
    reserve = data_dir / RESERVE
    free = shutil.disk_usage(data_dir).free
    if reserve.exists() and free < RESERVE_BYTES:
        reserve.unlink()  # so that the library opens at all (SQLite's WAL index needs room), and `rm` works
    elif not reserve.exists() and free > 4 * RESERVE_BYTES:
        try:
            with open(reserve, "wb") as file:
                os.posix_fallocate(file.fileno(), 0, RESERVE_BYTES)  # blocks of its own, not a sparse file
        except OSError:
            reserve.unlink(missing_ok=True)


MAX_ROW_ID = 2**63 - 1  # SQLite's largest INTEGER: a larger Python int is an OverflowError in a query


def row_id(value: int | str) -> int | None:
    """`value` as a row id, or None where it cannot be one (not a whole number, not positive, too large)."""
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 < number <= MAX_ROW_ID else None


def now() -> str:
    """The time a row is written, as stored: UTC, to the second, ISO 8601."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")

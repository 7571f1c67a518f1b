"""Adding files to the library: extract (in parallel child processes), chunk, store; one outcome per file.

Each file is its own transaction: a file that fails, or a kill halfway through a batch, leaves the files
before it added and nothing of the file it was on.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.db import LibraryError
from core.errors import KnownError
from core.library.chunking import DEFAULT_SIZE, check_settings, chunk_pages
from core.library.extract import PAGE_BY_OCR, Extracted, Limits, extract, kind_of, start_parsers
from core.library.store import Document, Library, shown
from core.progress import QUIET, Work

# Follows a file's path in progress while its pages are read by OCR: a suffix no path given to add can end
# with, since a file's name ends in its type (.pdf, .png).
BY_OCR = "\0ocr"


def reading(what: str) -> tuple[Path, bool]:
    """The file that add_documents' progress names, and whether its pages are being read by OCR."""
    path, marked, _ = what.partition(BY_OCR)
    return Path(path), bool(marked)


@dataclass(frozen=True)
class Outcome:
    path: Path
    status: str  # "added", "already there" or "refused"
    document: Document | None = None
    reason: str | None = None  # the sentence shown when refused


def collect_files(paths: Iterable[Path], *, recursive: bool) -> tuple[list[Path], list[Outcome]]:
    """The files to add: each path as given, and with `recursive`, the readable files inside folders; and the
    links found inside folders, refused: a link can lead out of the folder (to a password file, another
    user's share), and what it leads to would be searchable, trainable and sent to remote hosts.

    A folder given without `recursive` stays in the list, to be refused with its own sentence.
    """
    files: list[Path] = []
    links: list[Outcome] = []
    for path in paths:
        if not (recursive and path.is_dir()):
            files.append(path)
            continue
        found: list[Path] = []
        for folder, dirs, names in os.walk(path):  # links to folders are listed, not walked
            for name in [*dirs, *names]:
                entry = Path(folder, name)
                if (entry.is_symlink() and entry.is_dir()) or (name in names and kind_of(entry) is not None):
                    found.append(entry)
        for entry in sorted(found):
            if entry.is_symlink():
                reason = f"{shown(entry.name)} is a link inside {shown(path.name)}; links in folders are not followed."
                links.append(Outcome(entry, "refused", reason=reason))
            else:
                files.append(entry)
    return files, links


def add_documents(
    library: Library,
    paths: Iterable[Path],
    *,
    chunk_size: int = DEFAULT_SIZE,
    overlap: int = 0,
    limits: Limits = Limits(),
    ocr: bool = True,
    work: Work = QUIET,
) -> Iterator[Outcome]:
    """Add each file; yields its outcome as soon as it is known, in the order given. With `ocr`, pages
    without text (scans, images) are read by OCR.

    Files are parsed in parallel, one child process per core; `work` hears each file's pages read, from worker
    threads: `what` is the file's path, and for pages read by OCR the path then BY_OCR. Raises
    core.errors.Cancelled when `work` is cancelled, and LibraryError when the library itself fails (busy, disk
    full); the files whose outcome was yielded stay added.
    """
    check_settings(size=chunk_size, overlap=overlap)  # before any file is parsed
    start_parsers()
    stop = threading.Event()  # set when this batch ends early, so that its parses in flight end too

    def cancelled() -> bool:
        return stop.is_set() or work.cancelled()

    def parse(path: Path) -> Extracted:
        def progress(unit: str, done: int, total: int) -> None:
            work.progress(f"{path}{BY_OCR}" if unit == PAGE_BY_OCR else str(path), done, total)

        return extract(path, limits=limits, ocr=ocr, work=Work(progress, cancelled))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs: list[tuple[Path, Document | Future[Extracted]]] = []
        for path in paths:
            # Hashing costs milliseconds; parsing a file that is already there costs far more.
            sha256 = _sha256(path)
            existing = library.find_sha256(sha256) if sha256 else None
            jobs.append((path, existing or pool.submit(parse, path)))
        try:
            for path, job in jobs:
                if isinstance(job, Document):
                    yield Outcome(path, "already there", document=job)
                    continue
                try:
                    yield _store(library, path, job.result(), chunk_size, overlap)
                except LibraryError:
                    raise
                except KnownError as error:
                    yield Outcome(path, "refused", reason=str(error))
        finally:
            stop.set()
            for _, job in jobs:
                if isinstance(job, Future):
                    job.cancel()


def add_version(library: Library, replaces: str | int, path: Path, **settings: Any) -> tuple[Outcome, Document]:
    """Add `path` as a new version of the document `replaces` (an amended contract): the old version
    leaves the library, so search no longer serves it, and a record of it stays, so that the models made
    from it are flagged out of date. A refused file leaves the library as it was. Returns the new version's
    outcome and the old version; `settings` are add_documents'."""
    old = library.document(replaces)
    (outcome,) = add_documents(library, [path], **settings)
    if outcome.document is not None:
        if outcome.document.id == old.id:
            raise KnownError(f"{shown(path.name)} is {old.name} itself, not a new version of it.")
        library.remove(old.id, replaced_by=outcome.document)
    return outcome, old


def _store(library: Library, path: Path, extracted: Extracted, chunk_size: int, overlap: int) -> Outcome:
    if (existing := library.find_sha256(extracted.sha256)) is not None:
        return Outcome(path, "already there", document=existing)  # a copy earlier in the same batch
    chunks = chunk_pages(extracted.pages, size=chunk_size, overlap=overlap)
    document = library.insert_document(
        source=path,
        sha256=extracted.sha256,
        kind=extracted.kind,
        title=extracted.title,
        pages=extracted.pages,
        chunks=chunks,
        ocr=extracted.ocr,
    )
    return Outcome(path, "added", document=document)


def _sha256(path: Path) -> str | None:
    """The file's hash, or None where it cannot be read; extract() then says why."""
    if not path.is_file():  # a pipe or a device would be read forever
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()

"""The library's documents: their pages and chunks, with an FTS5 index (core/db.py holds the database).

A document's bytes are kept under files/ so that its pages can be shown even after the original moves.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import re
import sqlite3
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from core.db import LibraryDatabase, known_error, now, row_id
from core.errors import KnownError
from core.library.chunking import Chunk, index_context, page_starts
from core.library.ocr import LOW_CONFIDENCE, OcrPage, Word


@dataclass(frozen=True)
class Document:
    id: int
    name: str
    kind: str
    pages: int
    chunks: int
    bytes: int
    sha256: str
    title: str | None
    source: str
    added: str
    ocr_pages: int  # pages read by OCR (a scan's), not from a text layer
    unsure_pages: tuple[int, ...] = ()  # of those, the pages whose OCR confidence is low (numbers from 1)

    @property
    def reading(self) -> str:
        """How its text was read, where any was read by OCR: "3 pages by OCR, unsure on p. 2", or ""."""
        if not self.ocr_pages:
            return ""
        if self.ocr_pages == self.pages:
            by_ocr = "all pages by OCR" if self.pages > 1 else "read by OCR"
        else:
            by_ocr = f"{self.ocr_pages} page{'s' if self.ocr_pages > 1 else ''} by OCR"
        unsure = ", ".join(map(str, self.unsure_pages))
        return f"{by_ocr}, unsure on p. {unsure}" if unsure else by_ocr


@dataclass(frozen=True)
class Page:
    text: str
    by_ocr: bool  # read from an image of the page, not from its text layer
    unsure: bool  # read by OCR with low confidence
    words: list[Word]  # where OCR read each word, on the page and in the text


def _document(row: dict) -> Document:
    unsure = row.pop("unsure_pages")
    return Document(**row, unsure_pages=tuple(int(n) for n in unsure.split(",")) if unsure else ())


class Library(LibraryDatabase):
    """One library in `data_dir`: its documents, and (through core/db.py) every other table."""

    # -- documents --------------------------------------------------------------------------------

    def documents(self) -> list[Document]:
        return [_document(row) for row in self.db.query(_DOCUMENTS + " ORDER BY d.id")]

    def document(self, ref: str | int) -> Document:
        """A document by id or by name."""
        name = shown(str(ref))  # as names are stored: a name that is not UTF-8 is no SQLite text
        rows = list(self.db.query(_DOCUMENTS + " WHERE d.id = ? OR d.name = ?", [_as_id(ref), name]))
        if not rows:
            raise KnownError(f"No document {name} in the library.", cli="`tunedesk docs` lists them.")
        return _document(rows[0])

    def find_sha256(self, sha256: str) -> Document | None:
        rows = list(self.db.query(_DOCUMENTS + " WHERE d.sha256 = ?", [sha256]))
        return _document(rows[0]) if rows else None

    def insert_document(
        self,
        *,
        source: Path,
        sha256: str,
        kind: str,
        title: str | None,
        pages: list[str],
        chunks: list[Chunk],
        ocr: dict[int, OcrPage] | None = None,
    ) -> Document:
        """Store a parsed document and its chunks in one transaction, with a copy of its file; `ocr` holds what
        OCR said of each page it read (by index).

        The copy is hashed on the way, so a file that changed since it was parsed is refused; a refusal (a
        busy library, a full disk) leaves no copy behind.
        """
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            raise _gone(source) from None
        # The copy, and the text of its pages and chunks, each in its index too.
        self.check_room(size + 4 * sum(map(len, pages)), shown(source.name))
        stored = self._store_file(source, sha256, kind)
        try:
            with self.write() as db:
                row = {
                    "sha256": sha256,
                    "name": self._free_name(shown(source.name)),
                    "kind": kind,
                    "bytes": stored.stat().st_size,
                    "title": title,
                    "source": shown(str(source.absolute())),
                    "added": now(),
                }
                document_id = int(db.table("documents").insert(row).last_pk)  # type: ignore[arg-type]
                by_ocr = ocr or {}
                db.table("pages").insert_all(
                    {
                        "document_id": document_id,
                        "number": index + 1,
                        "start": start,
                        "text": text,
                        "ocr": index in by_ocr,
                        "ocr_confidence": by_ocr[index].confidence if index in by_ocr else None,
                        "ocr_words": json.dumps(by_ocr[index].words) if index in by_ocr else None,
                    }
                    for index, (start, text) in enumerate(zip(page_starts(pages), pages, strict=True))
                )
                db.table("chunks").insert_all(
                    {
                        "document_id": document_id,
                        "page_first": chunk.page_first,
                        "page_last": chunk.page_last,
                        "start": chunk.start,
                        "end": chunk.end,
                        "text": chunk.text,
                        "context": index_context(chunk.start),
                    }
                    for chunk in chunks
                )
        except BaseException:
            self._forget_copy(stored, sha256)
            raise
        return self.document(document_id)

    def _forget_copy(self, stored: Path, sha256: str) -> None:
        # Unless another opener added the same file meanwhile: the copy is then its document's.
        with contextlib.suppress(sqlite3.Error, KnownError):
            if self.find_sha256(sha256) is None:
                stored.unlink(missing_ok=True)

    def remove(self, ref: str | int, *, replaced_by: Document | None = None) -> Document:
        """Remove a document with its pages, chunks, Q&A pairs and index rows, in one transaction; with
        `replaced_by`, record in the same transaction that this version was replaced by that one."""
        document = self.document(ref)
        with self.write() as db:
            db.execute(
                "DELETE FROM qa_pairs WHERE chunk_id IN (SELECT id FROM chunks WHERE document_id = ?)", [document.id]
            )
            db.execute("DELETE FROM chunks WHERE document_id = ?", [document.id])
            db.execute("DELETE FROM pages WHERE document_id = ?", [document.id])
            db.execute("DELETE FROM documents WHERE id = ?", [document.id])
            if replaced_by is not None:
                row = {"sha256": document.sha256, "name": document.name, "by_sha256": replaced_by.sha256}
                db.table("replaced").upsert(row | {"replaced": now()}, pk="sha256")
        self.stored_file(document).unlink(missing_ok=True)
        return document

    def replaced(self) -> dict[str, str]:
        """The SHA-256 of each version a newer one replaced, with the newer one's."""
        return {row["sha256"]: row["by_sha256"] for row in self.db.query("SELECT * FROM replaced")}

    def backup(self, target: Path | None = None) -> Path:
        """A consistent copy of the database (SQLite's VACUUM INTO: a snapshot even while others write), by
        default in backups/ with the time in its name. The documents' stored copies (files/) are not in it."""
        if target is None:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
            target = self.data_dir / "backups" / f"library-{stamp}.db"
            target.parent.mkdir(exist_ok=True)
        if target.exists():
            raise KnownError(f"{target} exists already; choose another name.")
        if not target.parent.is_dir():  # a typo in the path should not make folders
            raise KnownError(f"The folder {target.parent} does not exist; make it first or choose another.")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        try:
            self.db.execute("VACUUM INTO ?", [str(partial)])
        except sqlite3.Error as error:
            partial.unlink(missing_ok=True)
            raise known_error(error, target) from error
        partial.replace(target)
        return target

    def stored_file(self, document: Document) -> Path:
        return self.files_dir / f"{document.sha256}{_SUFFIX[document.kind]}"

    def page(self, document_id: int, number: int) -> Page:
        rows = self.db.execute(
            "SELECT text, ocr, ocr_confidence, ocr_words FROM pages WHERE document_id = ? AND number = ?",
            [document_id, number],
        ).fetchall()
        if not rows:
            return Page("", by_ocr=False, unsure=False, words=[])
        text, by_ocr, confidence, words = rows[0]
        unsure = confidence is not None and confidence < LOW_CONFIDENCE
        return Page(text, by_ocr=bool(by_ocr), unsure=unsure, words=[tuple(w) for w in json.loads(words or "[]")])

    def page_text(self, document_id: int, number: int) -> str:
        rows = list(self.db.query("SELECT text FROM pages WHERE document_id = ? AND number = ?", [document_id, number]))
        return rows[0]["text"] if rows else ""

    def _store_file(self, source: Path, sha256: str, kind: str) -> Path:
        self.files_dir.mkdir(exist_ok=True)
        final = self.files_dir / f"{sha256}{_SUFFIX[kind]}"
        partial = final.with_name(final.name + ".partial")
        digest = hashlib.sha256()
        try:
            with open(source, "rb") as reader, open(partial, "wb") as writer:
                while block := reader.read(1 << 20):
                    digest.update(block)
                    writer.write(block)
                writer.flush()
                os.fsync(writer.fileno())
        except FileNotFoundError:
            partial.unlink(missing_ok=True)
            raise _gone(source) from None
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise KnownError(f"{source.name} could not be copied into the library: {error.strerror}.") from None
        if digest.hexdigest() != sha256:
            partial.unlink()
            raise KnownError(f"{source.name} changed while it was being added; add it again.")
        partial.replace(final)
        return final

    def _free_name(self, name: str) -> str:
        name = _shorten(name)
        stem, dot, suffix = name.rpartition(".") if "." in name else (name, "", "")
        candidate, counter = name, 1
        while self.db.execute("SELECT 1 FROM documents WHERE name = ?", [candidate]).fetchone():
            counter += 1
            candidate = f"{stem} ({counter}){dot}{suffix}"
        return candidate


_DOCUMENTS = f"""
    SELECT d.id, d.name, d.kind, d.bytes, d.sha256, d.title, d.source, d.added,
        (SELECT count(*) FROM pages WHERE document_id = d.id) AS pages,
        (SELECT count(*) FROM chunks WHERE document_id = d.id) AS chunks,
        (SELECT count(*) FROM pages WHERE document_id = d.id AND ocr) AS ocr_pages,
        (SELECT group_concat(number) FROM (SELECT number FROM pages WHERE document_id = d.id AND ocr
            AND ocr_confidence < {LOW_CONFIDENCE} ORDER BY number)) AS unsure_pages
    FROM documents d"""

_SUFFIX = {"pdf": ".pdf", "docx": ".docx", "text": ".txt", "png": ".png", "jpeg": ".jpg", "tiff": ".tif"}


def shown(text: str) -> str:
    """A file name (or a line naming one) as text that can be stored and printed: bytes that are not UTF-8
    (which Python keeps as lone surrogates), control characters (a newline in a name could fake a line of
    output, or a citation) and the invisible characters that make a name look like another (a right-to-left
    override shows "invoice\u202efdp.exe" as "invoiceexe.pdf"; zero-width spaces) become U+FFFD. In NFC, so
    that the same name typed or stored decomposed (as macOS writes it) is the same name."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub("\ufffd", unicodedata.normalize("NFC", text))


# C0 controls and DEL; zero-width and direction marks, embeddings, overrides and isolates; word joiner and
# invisible operators; the byte-order mark used as a zero-width no-break space.
_CONTROL = re.compile("[\x00-\x1f\x7f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _as_id(ref: str | int) -> int:
    return row_id(ref) or -1  # a name, then


def _shorten(name: str, limit: int = 120) -> str:
    if len(name) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 10:
        return name[: limit - 1] + "…"
    return f"{stem[: limit - len(suffix) - 2]}….{suffix}"


def _gone(source: Path) -> KnownError:
    return KnownError(f"{source.name} disappeared while it was being added.")

"""core.library.store on real SQLite files: adding, removing, migrations, and the environment's failures."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core import RESOURCES
from core.db import migrations
from core.errors import KnownError
from core.library.chunking import OPENING_CHARS, OPENING_MARK
from core.library.ingest import add_documents
from core.library.store import Library
from core.progress import Work
from tests.conftest import SAMPLE, make_pdf
from tests.test_cli import tunedesk


def counts(library: Library) -> dict[str, int]:
    tables = ("documents", "pages", "chunks", "chunks_fts")
    return {t: library.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def test_add_the_sample_contract(library):
    (outcome,) = add_documents(library, [SAMPLE])
    document = outcome.document
    assert outcome.status == "added"
    assert (document.name, document.kind, document.pages) == ("license_agreement_50p.pdf", "pdf", 50)
    assert counts(library) == {"documents": 1, "pages": 50, "chunks": document.chunks, "chunks_fts": document.chunks}
    assert library.stored_file(document).read_bytes() == SAMPLE.read_bytes()
    assert "14.2 Governing Law" in library.page_text(document.id, 41)


def test_the_same_file_twice_changes_nothing(library, tmp_path):
    add_documents_list = list(add_documents(library, [SAMPLE]))
    copy = tmp_path / "renamed copy.pdf"
    copy.write_bytes(SAMPLE.read_bytes())
    before = counts(library)
    outcomes = list(add_documents(library, [SAMPLE, copy]))
    assert [o.status for o in outcomes] == ["already there", "already there"]
    assert outcomes[1].document == add_documents_list[0].document
    assert counts(library) == before


def test_same_name_other_content_gets_a_distinct_name(library, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_pdf(tmp_path / "a" / "contract.pdf", ["First contract."])
    second = make_pdf(tmp_path / "b" / "contract.pdf", ["Second contract."])
    names = [o.document.name for o in add_documents(library, [first, second])]
    assert names == ["contract.pdf", "contract (2).pdf"]


def test_remove_takes_pages_chunks_index_rows_and_the_stored_file(library, tmp_path):
    other = make_pdf(tmp_path / "other.pdf", ["Another document about royalties."])
    sample, kept = (o.document for o in add_documents(library, [SAMPLE, other]))
    library.remove(sample.name)
    assert counts(library) == {"documents": 1, "pages": 1, "chunks": kept.chunks, "chunks_fts": kept.chunks}
    assert not library.stored_file(sample).exists()
    assert library.db.execute("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH 'vyera'").fetchone()[0] == 0
    with pytest.raises(KnownError, match=r"No document license_agreement_50p\.pdf"):
        library.remove(sample.name)


def test_a_file_that_disappears_during_add_leaves_nothing(library, tmp_path):
    doomed = tmp_path / "doomed.pdf"
    doomed.write_bytes(SAMPLE.read_bytes())

    def delete_it(path, done, total):  # called while the child parses its own copy of the bytes
        Path(path).unlink(missing_ok=True)

    (outcome,) = add_documents(library, [doomed], work=Work(delete_it))
    assert outcome.status == "refused"
    # Gone before the second half was read, or before the copy into the library: either way, one sentence.
    assert outcome.reason in (
        "doomed.pdf disappeared before it could be read.",
        "doomed.pdf disappeared while it was being added.",
    )
    assert counts(library) == {"documents": 0, "pages": 0, "chunks": 0, "chunks_fts": 0}
    assert not library.files_dir.exists() or not any(library.files_dir.iterdir())


def test_a_file_that_changes_during_add_is_refused(library, tmp_path):
    changing = tmp_path / "changing.pdf"
    changing.write_bytes(SAMPLE.read_bytes())

    def change_it(path, done, total):
        Path(path).write_bytes(b"%PDF-1.7 something else entirely")

    (outcome,) = add_documents(library, [changing], work=Work(change_it))
    assert outcome.reason in (
        "changing.pdf changed while it was being read.",
        "changing.pdf changed while it was being added; add it again.",
    )
    assert counts(library)["documents"] == 0


def test_threads_that_open_one_new_library_together_all_open_it(tmp_path):
    """The window's tasks start together on a new library: each must find it, not the others' half-made folder
    (refused as not a library) or a busy database (15 of 60 pairs failed so before)."""
    failures: list[Exception] = []

    def open_it(data: Path) -> None:
        try:
            Library(data).close()
        except Exception as error:  # any failure is the test's finding
            failures.append(error)

    for attempt in range(20):
        threads = [threading.Thread(target=open_it, args=(tmp_path / str(attempt),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures


def test_schema_is_versioned(library):
    assert library.db.execute("PRAGMA user_version").fetchone()[0] == len(migrations._migrations)
    assert library.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_library_from_a_newer_version_is_refused(tmp_path):
    with Library(tmp_path) as library, library.write() as db:
        db.table("_sqlite_migrations").insert({"migration_set": "tunedesk", "name": "m999_future", "applied_at": "x"})
    with pytest.raises(KnownError, match="written by a newer version of Tunedesk"):
        Library(tmp_path)


def test_pending_migrations_back_up_the_library_first(tmp_path):
    with Library(tmp_path) as library:
        list(add_documents(library, [SAMPLE]))

    @migrations()
    def m900_test_only(db):
        db.execute("CREATE TABLE test_only (id INTEGER)")

    try:
        with Library(tmp_path) as library:
            assert library.db.execute("PRAGMA user_version").fetchone()[0] == len(migrations._migrations)
        backup = sqlite3.connect(tmp_path / "library.db.before-m900_test_only")
        assert backup.execute("SELECT count(*) FROM documents").fetchone()[0] == 1
        assert backup.execute("SELECT count(*) FROM sqlite_master WHERE name = 'test_only'").fetchone()[0] == 0
    finally:
        migrations._migrations.pop()


def test_a_library_from_before_chunk_contexts_is_indexed_again(tmp_path):
    with Library(tmp_path) as library:
        (outcome,) = add_documents(library, [SAMPLE])
        # Back to the schema of m005: one indexed column, no context, m006 not applied.
        library.db.table("chunks").disable_fts()
        library.db.execute("ALTER TABLE chunks DROP COLUMN context")
        library.db.table("chunks").enable_fts(["text"], fts_version="FTS5", create_triggers=True)
        library.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm006_chunk_context'")
    with Library(tmp_path) as library:
        indexed = library.db.execute(
            "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", [f"context: {OPENING_MARK}"]
        ).fetchone()[0]
        opening = library.db.execute("SELECT count(*) FROM chunks WHERE start < ?", [OPENING_CHARS]).fetchone()[0]
        assert counts(library)["chunks_fts"] == outcome.document.chunks
    assert indexed == opening > 0


def test_a_library_readable_by_others_is_made_private_once(tmp_path):
    with Library(tmp_path / "lib") as library:
        list(add_documents(library, [SAMPLE]))
    for path in [tmp_path / "lib", *(tmp_path / "lib").rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)  # as an earlier version left it
    with Library(tmp_path / "lib") as library:
        assert library.tightened
    modes = {oct(path.stat().st_mode & 0o777) for path in [tmp_path / "lib", *(tmp_path / "lib").rglob("*")]}
    assert modes <= {"0o700", "0o600"}
    with Library(tmp_path / "lib") as library:
        assert not library.tightened  # said once


def test_a_folder_of_the_users_is_refused_and_its_permissions_left_alone(tmp_path):
    folder = tmp_path / "X"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "f").write_text("a")
    for path in [folder, folder / "sub", folder / "sub" / "f"]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    refused = tunedesk("docs", data_dir=folder)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"tunedesk: The folder {folder} is neither empty nor a Tunedesk library (it holds other files and no "
        "library.db); choose an empty or new folder for the library."
    )
    assert oct((folder / "sub" / "f").stat().st_mode & 0o777) == "0o644"
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    assert sorted(path.name for path in folder.rglob("*")) == ["f", "sub"]  # nothing written there


def test_an_empty_data_dir_name_is_a_usage_error(tmp_path):
    refused = subprocess.run(
        [sys.executable, "-m", "core.cli.main", "docs", "--data-dir", ""], capture_output=True, text=True, cwd=tmp_path
    )
    assert refused.returncode == 2
    assert "argument --data-dir: an empty name is not a folder" in refused.stderr


def test_tightening_a_library_leaves_what_the_user_put_beside_it_and_follows_no_link(tmp_path):
    library_dir, outside = tmp_path / "lib", tmp_path / "outside"
    outside.mkdir()
    (outside / "shared.txt").write_text("shared")
    with Library(library_dir):
        pass
    (library_dir / "notes.txt").write_text("mine")
    (library_dir / "jobs").mkdir()
    (library_dir / "jobs" / "link").symlink_to(outside)
    for path in [library_dir, library_dir / "library.db", library_dir / "notes.txt", outside, outside / "shared.txt"]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with Library(library_dir) as library:
        assert library.tightened
    assert oct(library_dir.stat().st_mode & 0o777) == "0o700"
    assert oct((library_dir / "library.db").stat().st_mode & 0o777) == "0o600"
    modes = [oct(path.stat().st_mode & 0o777) for path in [library_dir / "notes.txt", outside, outside / "shared.txt"]]
    assert modes == ["0o644", "0o755", "0o644"]


@pytest.mark.timeout(30)
def test_a_pipe_is_refused_without_being_read(library, tmp_path):
    pipe = tmp_path / "contract.pdf"
    os.mkfifo(pipe)  # nothing ever writes to it: reading it would wait forever
    (outcome,) = add_documents(library, [pipe])
    assert (outcome.status, outcome.reason) == (
        "refused",
        "contract.pdf is not a regular file (a pipe, socket or device cannot be added).",
    )


def test_a_file_name_that_is_not_utf8_or_has_a_newline_is_added_and_so_are_the_rest(library, tmp_path):
    odd = tmp_path / os.fsdecode(b"b\xff.txt")
    odd.write_text("The odd name's text.")
    plain = tmp_path / "c.txt"
    plain.write_text("The plain name's text.")
    faking = tmp_path / "d\nadded          fake.txt"  # a newline could fake a line of output
    faking.write_text("The faking name's text.")
    outcomes = list(add_documents(library, [odd, plain, faking]))
    assert [o.status for o in outcomes] == ["added", "added", "added"]
    assert [d.name for d in library.documents()] == ["b\ufffd.txt", "c.txt", "d\ufffdadded          fake.txt"]


def test_bad_chunk_settings_are_refused_before_any_file_is_read(library, tmp_path):
    with pytest.raises(KnownError, match=r"The chunk size must be at least 16 characters, not 0\."):
        list(add_documents(library, [tmp_path / "never-read.txt"], chunk_size=0))


def test_not_a_database(tmp_path):
    (tmp_path / "library.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(KnownError, match="is not a Tunedesk library"):
        Library(tmp_path)


def test_disk_full_leaves_the_library_as_it_was(library, tmp_path):
    small = make_pdf(tmp_path / "small.pdf", ["A small first document."])
    list(add_documents(library, [small]))
    before = counts(library)
    pages = library.db.execute("PRAGMA page_count").fetchone()[0]
    library.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # as if the disk had room for two pages
    with pytest.raises(KnownError, match="cannot grow: the disk is full"):
        list(add_documents(library, [SAMPLE]))
    assert counts(library) == before
    assert library.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Nor a copy of the refused file: files/ holds the first document's alone.
    assert sorted(library.files_dir.iterdir()) == [library.stored_file(library.documents()[0])]


@pytest.mark.slow
def test_a_second_writer_waits_then_gets_a_clear_sentence(library, tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(30)",
         str(library.data_dir / "library.db")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(KnownError, match="is busy: another Tunedesk is writing to it"):
            list(add_documents(library, [SAMPLE]))
        assert time.monotonic() - started < 15
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert counts(library)["documents"] == 0


def test_backup_is_a_consistent_copy_and_never_overwrites(tmp_path):
    import sqlite3

    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    made = tunedesk("backup", data_dir=data)
    assert made.returncode == 0, made.stderr
    target = Path(made.stdout.split()[1])
    assert target.parent == data / "backups" and target.name.startswith("library-")
    copy = sqlite3.connect(target)
    try:
        assert copy.execute("SELECT name FROM documents").fetchall() == [(SAMPLE.name,)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        copy.close()
    again = tunedesk("backup", str(target), data_dir=data)
    assert again.returncode == 1 and f"{target} exists already" in again.stderr
    nowhere = tmp_path / "no" / "such" / "folder" / "x.db"
    typo = tunedesk("backup", str(nowhere), data_dir=data)
    assert typo.returncode == 1 and f"The folder {nowhere.parent} does not exist" in typo.stderr
    assert not (tmp_path / "no").exists()


def test_a_library_damaged_after_it_was_made_is_one_sentence(tmp_path):
    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    database = data / "library.db"
    size = database.stat().st_size
    with open(database, "r+b") as file:  # zero a run of pages in the middle, as a failing disk might
        file.seek(size // 3 // 4096 * 4096)
        file.write(b"\0" * (size // 3))
    damaged = (
        f"tunedesk: The library {database} is damaged (restore it from a backup, or move it away to start a new one)."
    )
    failed = 0
    for command in (
        ["docs"],
        ["search", "royalty"],
        ["add", str(RESOURCES / "samples" / "transportation_contract_106p.pdf")],
    ):
        result = tunedesk(*command, data_dir=data)
        assert "Traceback" not in result.stderr, result.stderr
        if result.returncode:  # a command that reads no damaged page still works
            assert result.stderr.strip().splitlines()[-1] == damaged
            failed += 1
    assert failed


def test_rm_frees_room_on_a_full_disk(tmp_path):
    """SQLite writes a removal before it frees anything: on a full disk the library gives back the room it
    kept aside, and the removal goes through. An add on the full disk does not spend that room first."""
    import shutil

    from tests.test_cli import TUNEDESK

    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged mount namespaces (unshare -rm) for a small tmpfs")
    data = tmp_path / "data"
    data.mkdir()
    OTHER = RESOURCES / "samples" / "transportation_contract_106p.pdf"
    script = (
        f"mount -t tmpfs -o size=24m tmpfs {data} && {TUNEDESK} add {SAMPLE} --data-dir {data} >/dev/null && "
        f"ls {data} && (dd if=/dev/zero of={data}/filler bs=64k 2>/dev/null; true) && "
        f"({TUNEDESK} add {OTHER} --data-dir {data} 2>&1 >/dev/null; true) && "
        f"{TUNEDESK} rm 1 --data-dir {data} && {TUNEDESK} docs --json --data-dir {data} && ls {data}/files"
    )
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "library.reserve" in result.stdout.split()  # kept aside while the disk had room
    nearly_full = "tunedesk: transportation_contract_106p.pdf needs about 1.8 MB and the library's disk is nearly full"
    assert nearly_full in result.stdout, result.stdout  # not added into the room kept for the removal
    assert '"documents": []' in result.stdout
    assert result.stdout.rstrip().endswith("}")  # ls printed nothing: the document's copy is gone too

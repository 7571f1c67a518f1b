"""The command line as a user runs it: real processes, a real library folder, real files."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE, make_pdf

TUNEDESK = Path(sys.executable).parent / "tunedesk"


def tunedesk(*args: str, data_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The command as a script runs it: no terminal on stdin."""
    return subprocess.run(
        [str(TUNEDESK), *args, "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_huge_step_count_is_one_sentence_and_starts_nothing(tmp_path):
    data = tmp_path / "data"
    refused = tunedesk("train", "--max-steps", "100000000000000000000000", "--detach", data_dir=data)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        "The setting max_steps must be between 0 and 10,000,000 (0: as many as the "
        "epochs take), not 100000000000000000000000."
    )
    assert json.loads(tunedesk("jobs", "--json", data_dir=data).stdout) == {"jobs": []}


def test_small_gaps_are_one_sentence(tmp_path):
    data = tmp_path / "data"
    for k in ("0", "-5"):
        wrong = tunedesk("search", "royalty", "-k", k, data_dir=data)
        assert wrong.returncode == 2 and "argument -k: must be from 1 to 10,000, not" in wrong.stderr
    local = tunedesk("hosts", "add", "local", "me@192.0.2.1", data_dir=data)
    assert local.returncode == 1 and "A host cannot be named local" in local.stderr


def test_what_the_cli_writes_only_its_user_can_read(tmp_path):
    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    assert tunedesk("dataset", "build", data_dir=data).returncode == 0
    written = [data, *data.rglob("*")]
    assert [p for p in written if p.stat().st_mode & 0o077] == []
    assert any(p.name == "train.jsonl" for p in written)


def test_add_docs_search_rm(tmp_path):
    data = tmp_path / "data"
    added = tunedesk("add", str(SAMPLE), data_dir=data)
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith("added          license_agreement_50p.pdf (50 pages")
    docs = json.loads(tunedesk("docs", "--json", data_dir=data).stdout)
    (document,) = docs["documents"]
    assert set(document) >= {"id", "name", "pages", "chunks", "bytes"}
    assert document["bytes"] == SAMPLE.stat().st_size

    found = json.loads(tunedesk("search", "governing law New York", "-k", "3", "--json", data_dir=data).stdout)
    assert found["query"] == "governing law New York"
    assert len(found["hits"]) == 3
    top = found["hits"][0]
    assert set(top) >= {"chunk_id", "document", "pages", "text", "score"}
    assert (top["document"], top["pages"]) == ("license_agreement_50p.pdf", [41])

    searched = tunedesk("search", "governing law New York", "-k", "1", data_dir=data)
    assert searched.stdout.startswith("1. license_agreement_50p.pdf p. 41")
    assert "Loading the model search weighs meaning with" in searched.stderr  # a wait of seconds says so

    removed = tunedesk("rm", str(document["id"]), data_dir=data)
    assert removed.stdout.strip() == f"removed license_agreement_50p.pdf (id {document['id']})"
    assert json.loads(tunedesk("docs", "--json", data_dir=data).stdout) == {"documents": []}


def test_a_bad_file_is_refused_and_the_others_are_added(tmp_path):
    good = make_pdf(tmp_path / "good.pdf", ["A good document about payment terms."])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4\n garbage")
    (tmp_path / "folder").mkdir()
    result = tunedesk("add", str(tmp_path / "broken.pdf"), str(good), str(tmp_path / "folder"), data_dir=tmp_path / "d")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("refused        broken.pdf is damaged")
    assert lines[1].startswith("added          good.pdf (1 pages")
    assert lines[2] == "refused        folder is a folder, not a file."
    assert [d["name"] for d in json.loads(tunedesk("docs", "--json", data_dir=tmp_path / "d").stdout)["documents"]] == [
        "good.pdf"
    ]


def test_recursive_add_takes_the_readable_files_in_a_folder(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    make_pdf(tmp_path / "in" / "sub" / "a.pdf", ["Alpha."])
    (tmp_path / "in" / "notes.md").write_text("# Notes\n\nBeta.")
    (tmp_path / "in" / "sheet.xlsx").write_bytes(b"PK\x03\x04")
    result = tunedesk("add", "-r", str(tmp_path / "in"), data_dir=tmp_path / "d")
    assert result.returncode == 0, result.stdout
    assert sorted(line.split()[1] for line in result.stdout.splitlines()) == ["a.pdf", "notes.md"]


def test_recursive_add_follows_no_link_out_of_the_folder(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash")
    (tmp_path / "in" / "notes.md").write_text("# Notes\n\nBeta.")
    (tmp_path / "in" / "passwd.txt").symlink_to(tmp_path / "secret" / "passwd.txt")
    (tmp_path / "in" / "elsewhere").symlink_to(tmp_path / "secret")
    result = tunedesk("add", "-r", str(tmp_path / "in"), data_dir=tmp_path / "d")
    assert result.returncode == 1
    assert sorted(result.stdout.splitlines()) == [
        "added          notes.md (1 pages, 1 chunks, id 1)",
        "refused        elsewhere is a link inside in; links in folders are not followed.",
        "refused        passwd.txt is a link inside in; links in folders are not followed.",
    ]
    listed = json.loads(tunedesk("docs", "--json", data_dir=tmp_path / "d").stdout)["documents"]
    assert [d["name"] for d in listed] == ["notes.md"]


def test_names_that_are_not_utf8_or_hide_characters_are_named_safely(tmp_path):
    data = tmp_path / "d"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    odd = os.fsdecode(b"contract\xff.pdf")
    for command in [("rm", odd), ("search", "royalty", "--doc", odd), ("add", str(SAMPLE), "--replaces", odd)]:
        run = subprocess.run(
            [os.fsencode(TUNEDESK), *map(os.fsencode, command), b"--data-dir", os.fsencode(data)],
            capture_output=True,
        )
        assert run.returncode == 1, command
        assert (
            run.stderr.decode().strip()
            == "tunedesk: No document contract\ufffd.pdf in the library. `tunedesk docs` lists them."
        ), command

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "invoice\u202efdp.txt").write_text("Right-to-left override.")
    (tmp_path / "in" / "zero\u200bwidth.txt").write_text("Zero width.")
    (tmp_path / "in" / "cafe\u0301.txt").write_text("Decomposed.")  # NFD, as macOS writes names
    (tmp_path / "in" / "caf\u00e9.txt").write_text("Composed.")
    added = tunedesk("add", "-r", str(tmp_path / "in"), data_dir=data)
    assert added.returncode == 0, added.stderr
    assert "\u202e" not in added.stdout and "\u200b" not in added.stdout
    names = sorted(d["name"] for d in json.loads(tunedesk("docs", "--json", data_dir=data).stdout)["documents"])
    assert names == sorted(
        [SAMPLE.name, "invoice\ufffdfdp.txt", "zero\ufffdwidth.txt", "caf\u00e9.txt", "caf\u00e9 (2).txt"]
    )


def test_ctrl_c_in_the_first_moments_of_add_prints_no_traceback(tmp_path):
    # Ctrl-C reaches the terminal's whole process group: the command, and the fork server its parsers come from.
    for number, delay in enumerate([0.1, 0.2, 0.35, 0.5, 0.7, 0.9, 1.2, 1.5]):
        command = [str(TUNEDESK), "add", str(SAMPLE), "--data-dir", str(tmp_path / str(number))]
        with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True) as run:
            time.sleep(delay)
            os.killpg(run.pid, signal.SIGINT)
            _, err = run.communicate(timeout=60)
        assert "Traceback" not in err, (delay, err)
        # -SIGINT: the Ctrl-C came as the interpreter shut down, after the work, when Python has put back the
        # default handler. A shell reports it as 130, like the command's own.
        assert run.returncode in (0, 130, -signal.SIGINT), (delay, run.returncode, err)


def test_output_cut_short_by_its_reader_ends_without_a_traceback(tmp_path):
    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    # As `tunedesk search ... | head -1`: far more than a pipe's buffer, and the reader gone after a line.
    command = [str(TUNEDESK), "search", "the", "-k", "10000", "--data-dir", str(data)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        assert run.stdout is not None and run.stderr is not None
        assert run.stdout.readline().startswith("1. ")
        run.stdout.close()
        errors = run.stderr.read()
    assert "Traceback" not in errors and run.returncode == 128 + signal.SIGPIPE, errors


def test_usage_errors_and_unknown_documents(tmp_path):
    assert tunedesk("search", data_dir=tmp_path).returncode == 2
    missing = tunedesk("rm", "nonexistent.pdf", data_dir=tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "tunedesk: No document nonexistent.pdf in the library. `tunedesk docs` lists them."


def test_tunedesk_home_chooses_the_library(tmp_path):
    env = {**os.environ, "TUNEDESK_HOME": str(tmp_path / "home")}
    subprocess.run([str(TUNEDESK), "add", str(SAMPLE)], env=env, check=True, capture_output=True)
    assert (tmp_path / "home" / "library.db").exists()


@pytest.mark.slow
def test_sigkill_during_add_never_leaves_a_half_added_document(tmp_path):
    """Kill `tunedesk add` at random moments; the library must stay consistent and the next add work."""
    big = tmp_path / "big.txt"
    big.write_text(
        "\n\n".join(f"Clause {i}. The supplier shall deliver lot {i} by day {i % 28 + 1}." for i in range(60_000))
    )
    data = tmp_path / "data"
    command = [str(TUNEDESK), "add", str(SAMPLE), str(big), "--data-dir", str(data)]
    started = time.monotonic()
    subprocess.run(command, check=True, capture_output=True)
    full_run = time.monotonic() - started
    subprocess.run([str(TUNEDESK), "rm", "big.txt", "--data-dir", str(data)], check=True, capture_output=True)
    subprocess.run([str(TUNEDESK), "rm", "license_agreement_50p.pdf", "--data-dir", str(data)], check=True)

    rng = random.Random(7)
    for _ in range(8):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, full_run))
        process.send_signal(signal.SIGKILL)
        process.wait()
        db = sqlite3.connect(data / "library.db")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for document_id, pages, chunks, indexed in db.execute(
            """SELECT d.id, (SELECT count(*) FROM pages WHERE document_id = d.id),
                (SELECT count(*) FROM chunks WHERE document_id = d.id),
                (SELECT count(*) FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE document_id = d.id))
            FROM documents d"""
        ):
            assert pages > 0 and chunks > 0 and indexed == chunks, document_id
        orphans = db.execute("SELECT count(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)")
        assert orphans.fetchone()[0] == 0
        db.close()
        subprocess.run([str(TUNEDESK), "rm", "big.txt", "--data-dir", str(data)], capture_output=True)
    final = subprocess.run(command, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert "big.txt" in final.stdout


BAD_NUMBERS = [
    ["train", "--max-steps", "100000000000000000000000", "--detach"],
    ["train", "--max-steps", "-1", "--detach"],
    ["train", "--epochs", "1e20", "--detach"],
    ["train", "--epochs", "nan", "--detach"],
    ["train", "--set", "lr=nan", "--detach"],
    ["train", "--set", "lora_rank=0", "--detach"],
    ["train", "--set", "seq_len=99999999999999999999", "--detach"],
    ["search", "royalty", "-k", "0"],
    ["search", "royalty", "-k", "-5"],
    ["search", "royalty", "-k", "99999999999999999999999"],
    ["add", "--chunk-size", "0", str(SAMPLE)],
    ["add", "--chunk-size", "16", "--overlap", "600", str(SAMPLE)],
    ["dataset", "build", "--val-share", "2"],
    ["dataset", "build", "--val-share", "nan"],
    ["job", "99999999999999999999999"],
    ["cancel", "-3"],
]


def test_bad_numbers_and_odd_files_get_one_sentence_and_leave_the_library_sound(tmp_path):
    """Fuzz-style: each bad number the CLI takes, and each odd kind of file given to add, is refused with one
    sentence (or argparse's usage line), no traceback, and the library is as it was."""
    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    odd = tmp_path / "odd"
    odd.mkdir()
    os.mkfifo(odd / "pipe.pdf")
    (odd / "loop.txt").symlink_to(odd / "loop.txt")
    (odd / os.fsdecode(b"name\xff.txt")).write_text("A file whose name is not UTF-8.")
    (odd / "empty.txt").write_bytes(b"")
    (odd / "one-line.txt").write_text("word " * 2_000_000)  # 10 MB, no line break
    runs = [tunedesk(*args, data_dir=data, timeout=60) for args in BAD_NUMBERS]
    runs += [tunedesk("add", str(path), data_dir=data, timeout=60) for path in sorted(odd.iterdir())]
    runs.append(tunedesk("add", "-r", str(odd), data_dir=data, timeout=120))
    named = [*BAD_NUMBERS, *(["add", p.name] for p in sorted(odd.iterdir())), ["add", "-r"]]
    for args, run in zip(named, runs, strict=True):
        assert "Traceback" not in run.stderr, (args, run.stderr)
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
        if args[0] != "add":  # every bad number is refused
            assert run.returncode in (1, 2) and (last.startswith("tunedesk") or "usage" in run.stderr), (args, last)
    listed = json.loads(tunedesk("docs", "--json", data_dir=data).stdout)["documents"]
    assert [d["name"] for d in listed if d["name"] == SAMPLE.name] == [SAMPLE.name]
    assert json.loads(tunedesk("jobs", "--json", data_dir=data).stdout)["jobs"] == []  # nothing started
    with sqlite3.connect(data / "library.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

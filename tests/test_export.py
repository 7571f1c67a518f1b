"""Export: a real checkpoint merged, converted by llama.cpp's converter, quantized, verified, and loaded by
llama.cpp; bad inputs refused with one sentence and nothing left behind."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from llama_cpp import Llama

from core.progress import Work
from tests.engine_fixtures import raw_examples, run_engine, write_job


def trained_job(tmp_path, base, sample_text, name="1"):
    job_dir = write_job(tmp_path / name, base, raw_examples(sample_text, 8), max_steps=3, save_every=3)
    result = run_engine(job_dir)
    assert result.returncode == 0, result.stderr
    return job_dir


def export(job_dir, step, quant):
    result = run_engine(job_dir, "core.engine.export", str(step), quant)
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result, events


def finished_files(job_dir):
    return sorted(p.name for p in (job_dir / "exports").iterdir()) if (job_dir / "exports").exists() else []


@pytest.mark.parametrize(("size", "quant", "stored_as"), [("tiny", "q8_0", "Q8_0"), ("tiny-k", "q4_k_m", "Q4_K")])
def test_a_checkpoint_becomes_a_verified_gguf_that_llama_cpp_runs(
    tmp_path, tiny_base, tiny_k_base, sample_text, size, quant, stored_as
):
    base = {"tiny": tiny_base, "tiny-k": tiny_k_base}[size]
    job_dir = trained_job(tmp_path, base, sample_text)
    result, events = export(job_dir, 3, quant)
    assert result.returncode == 0, result.stderr
    assert [e["phase"] for e in events if e["type"] == "phase"][-3:] == ["convert", "quantize", "verify"]
    done = events[-1]
    assert done["type"] == "done"
    assert done["agreement"] >= 0.9
    # Every matrix quantized: Q4_K_M keeps a few at Q6_K by design; norms stay F32.
    assert set(done["types"]) <= {stored_as, "Q6_K", "F32"}
    assert done["types"][stored_as] >= 4
    assert done["fallback"] is None
    # Named for what it is: the base, the job, the step, the quantization.
    assert finished_files(job_dir) == [
        f"tiny-job1-step-000003-{quant}.gguf",
        f"tiny-job1-step-000003-{quant}.gguf.json",
    ]
    receipt = json.loads((job_dir / "exports" / f"tiny-job1-step-000003-{quant}.gguf.json").read_text())
    assert receipt == {key: value for key, value in done.items() if key != "type"} | {"step": 3}

    llm = Llama(done["path"], n_ctx=256, verbose=False, seed=0)
    reply = llm.create_chat_completion([{"role": "user", "content": "Who pays?"}], max_tokens=8, temperature=0)
    assert reply["choices"][0]["message"]["content"] is not None
    assert llm.metadata["tokenizer.chat_template"].startswith("{%- set ns")


def test_k_quant_fallbacks_are_reported(tmp_path, tiny_base, sample_text):
    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    result, events = export(job_dir, 3, "q4_k_m")
    assert result.returncode == 0, result.stderr
    assert "could not take q4_k_m (their rows are not a multiple of 256)" in events[-1]["fallback"]


def test_an_adapter_from_another_base_is_refused_before_merging(tmp_path, tiny_base, tiny_k_base, sample_text):
    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    spec = json.loads((job_dir / "job.json").read_text())
    (job_dir / "job.json").write_text(json.dumps(spec | {"base": str(tiny_k_base)}))
    result, events = export(job_dir, 3, "q8_0")
    assert result.returncode == 1
    assert events[-1]["message"].startswith(f"The adapter in {job_dir}/checkpoints/step-000003 was trained on another")
    assert finished_files(job_dir) == []


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda base: (base / "tokenizer.model").unlink(), "has no tokenizer"),
        (lambda base: base.joinpath("model.safetensors").write_bytes(b"\x20" * 40), "is damaged (truncated?)"),
    ],
)
def test_a_broken_base_is_refused(tmp_path, tiny_base, sample_text, damage, message):
    base = tmp_path / "base"
    shutil.copytree(tiny_base, base)
    job_dir = trained_job(tmp_path, base, sample_text)
    damage(base)
    result, events = export(job_dir, 3, "q8_0")
    assert result.returncode == 1
    assert message in events[-1]["message"]
    assert finished_files(job_dir) == []


def test_unknown_quant_and_missing_checkpoint(tmp_path, tiny_base, sample_text):
    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    _, events = export(job_dir, 3, "q3_xyz")
    assert events[-1]["message"] == "Unknown quantization 'q3_xyz'; choose one of q4_k_m, q5_k_m, q8_0, f16."
    _, events = export(job_dir, 99, "q8_0")
    assert events[-1]["message"] == f"Job {job_dir.name} has no checkpoint at step 99."


def test_a_cancelled_export_leaves_nothing_that_looks_finished(tmp_path, tiny_base, sample_text):
    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    command = [sys.executable, "-m", "core.engine.export", str(job_dir), "3", "q8_0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if '"phase": "convert"' in line:
                break
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        rest = process.stdout.read()
        assert process.wait(timeout=60) == 1
    assert '"type": "cancelled"' in rest
    assert finished_files(job_dir) == []


def test_not_enough_disk_is_said_up_front(tmp_path, tiny_base, sample_text):
    if not shutil.which("unshare") or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("needs unprivileged mount namespaces (unshare -rm) for a small tmpfs")
    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    (job_dir / "exports").mkdir()
    script = (
        f"mount -t tmpfs -o size=64k tmpfs {job_dir}/exports && "
        f"{sys.executable} -m core.engine.export {job_dir} 3 q8_0; ls {job_dir}/exports"
    )
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    # In units that tell, not "0.0 GB" (64 KB of room; a tiny model's export needs more than a MB).
    assert re.search(r"Exporting needs about [\d.]+ MB free in .*, but only 64\.0 KB is free\.", result.stdout)
    assert result.stdout.rstrip().endswith("}")  # ls printed nothing: no file was written


def test_an_exported_model_can_write_q_and_a_pairs(tmp_path, tiny_base, sample_text, library):
    from core.dataset import qa_pairs
    from core.library.ingest import add_documents
    from tests.conftest import make_pdf

    job_dir = trained_job(tmp_path, tiny_base, sample_text)
    result, events = export(job_dir, 3, "q8_0")
    assert result.returncode == 0, result.stderr
    list(add_documents(library, [make_pdf(tmp_path / "c.pdf", ["2.1 Royalties. Vyera shall pay a royalty."])]))
    done = []
    # The tiny model writes no usable pairs; what counts is that llama.cpp ran on every passage and that
    # whatever it wrote was filtered against the passage (test_qa.py tests the filter on a real reply).
    progress = Work(lambda what, n, total: done.append((n, total)))
    count = qa_pairs.generate(library, source=events[-1]["path"], work=progress)
    assert done == [(1, 1)]
    stored = library.db.execute("SELECT count(*) FROM qa_pairs WHERE source = 'model:tiny-job1-step-000003-q8_0.gguf'")
    assert stored.fetchone()[0] == count


def test_a_finished_export_is_recorded_though_its_command_was_killed(tmp_path, tiny_base):
    """The engine's tool renamed the GGUF, then the command that would record it died: the library records
    it from its receipt, and not a file whose receipt does not vouch for it."""
    from tests.conftest import SAMPLE
    from tests.test_cli import tunedesk
    from tests.test_jobs import FAST

    library_dir = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=library_dir).returncode == 0
    trained = tunedesk("train", "--base", str(tiny_base), "--max-steps", "2", *FAST, data_dir=library_dir)
    assert trained.returncode == 0, trained.stderr
    job_dir = library_dir / "jobs" / "1"
    result, events = export(job_dir, 2, "q8_0")  # the tool alone: no command records what it makes
    assert events[-1]["type"] == "done", result.stdout
    stray = job_dir / "exports" / "step-000002-f16.gguf"
    stray.write_bytes(b"GGUF and nothing else")  # no receipt vouches for it
    listed = tunedesk("models", "--json", data_dir=library_dir)
    assert listed.returncode == 0, listed.stderr
    exported = [m for m in json.loads(listed.stdout)["models"] if m["source"] == "export"]
    assert [(m["path"], m["job_id"], m["step"], m["sha256"]) for m in exported] == [
        (events[-1]["path"], 1, 2, events[-1]["sha256"])
    ]


def test_an_exported_gguf_names_what_it_was_made_from_and_verify_checks_it(tmp_path, tiny_base):
    from pathlib import Path

    from core import __version__
    from core.jobdir import provenance
    from tests.conftest import SAMPLE
    from tests.test_cli import tunedesk
    from tests.test_jobs import FAST

    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    trained = tunedesk("train", "--base", str(tiny_base), "--max-steps", "2", *FAST, data_dir=data)
    assert trained.returncode == 0, trained.stderr
    exported = tunedesk("export", "1", "--quant", "q8_0", data_dir=data)
    assert exported.returncode == 0, exported.stderr
    listed = json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"]
    ((model,),) = [[m for m in listed if m["source"] == "export"]]
    assert [(d["name"], d["pages"]) for d in model["made_from"]] == [(SAMPLE.name, 50)]

    # The metadata round trip: what the file says, read back with llama.cpp's gguf-py.
    made = provenance.read(Path(model["path"]))
    job_dir = data / "jobs" / "1"
    assert made["version"] == __version__
    assert made["job"] == {"job": "1", "step": 2, "answer_score": None}
    assert made["base"]["name"] == str(tiny_base) and len(made["base"]["sha256"]) == 64
    assert made["dataset"]["train_sha256"] == provenance.file_sha256(job_dir / "dataset" / "train.jsonl")
    assert made["dataset"]["settings"]["kinds"] == ["grounded"]
    assert made["tensors_sha256"] == provenance.tensors_sha256(Path(model["path"]))

    checked = tunedesk("verify", model["path"], data_dir=data)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ": intact" in checked.stdout and f"{SAMPLE.name} (50 pages" in checked.stdout
    assert "unchanged in the library" in checked.stdout

    damaged = tmp_path / "damaged.gguf"  # a copy with one byte of its last tensor changed
    damaged.write_bytes(Path(model["path"]).read_bytes())
    with open(damaged, "r+b") as file:
        file.seek(-100, 2)
        byte = file.read(1)
        file.seek(-100, 2)
        file.write(bytes([byte[0] ^ 0xFF]))
    assert "NOT intact" in tunedesk("verify", str(damaged), data_dir=data).stdout

    assert tunedesk("rm", SAMPLE.name, data_dir=data).returncode == 0  # the document withdrawn from the library
    withdrawn = tunedesk("verify", model["path"], "--json", data_dir=data)
    assert withdrawn.returncode == 1
    report = json.loads(withdrawn.stdout)
    assert report["intact"] and [d["state"] for d in report["made_from"]["documents"]] == ["not in the library"]
    stranger = tunedesk("verify", str(SAMPLE), data_dir=data)
    assert stranger.returncode == 1 and "tunedesk: license_agreement_50p.pdf is not a GGUF file" in stranger.stderr
    removed = f"trained on a document you removed: {SAMPLE.name}"
    assert removed in tunedesk("models", data_dir=data).stdout
    assert json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"][0]["standing"] == removed

    # Another version under the same name (an amendment): the model is out of date, in the CLI and the app.
    amended = tmp_path / "amended" / SAMPLE.name
    amended.parent.mkdir()
    amended.write_bytes((SAMPLE.parent / "transportation_contract_106p.pdf").read_bytes())
    assert tunedesk("add", str(amended), data_dir=data).returncode == 0
    out_of_date = f"out of date: {SAMPLE.name} changed since"
    assert out_of_date in tunedesk("models", data_dir=data).stdout
    assert "changed: the library holds another version" in tunedesk("verify", model["path"], data_dir=data).stdout

    # A new version under another name, added as one (`add --replaces`): the record of the old version,
    # not a name, makes the model out of date; and the old version leaves the library and search.
    assert tunedesk("rm", SAMPLE.name, data_dir=data).returncode == 0
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    assert json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"][0]["standing"] is None
    version = tmp_path / "license_agreement_50p_amendment_1.pdf"
    version.write_bytes((SAMPLE.parent / "transportation_contract_106p.pdf").read_bytes())
    added = tunedesk("add", str(version), "--replaces", SAMPLE.name, data_dir=data)
    assert added.returncode == 0, added.stderr
    assert f"the new version of {SAMPLE.name} (document " in added.stdout
    listed = json.loads(tunedesk("docs", "--json", data_dir=data).stdout)["documents"]
    assert [d["name"] for d in listed] == [version.name]
    hits = json.loads(tunedesk("search", "license agreement", "--json", data_dir=data).stdout)["hits"]
    assert {hit["document"] for hit in hits} == {version.name}  # the old version's passages are gone
    assert out_of_date in tunedesk("models", data_dir=data).stdout
    assert "changed: the library holds another version" in tunedesk("verify", model["path"], data_dir=data).stdout
    again = tunedesk("add", str(version), "--replaces", version.name, data_dir=data)
    assert again.returncode == 1 and "is license_agreement_50p_amendment_1.pdf itself" in again.stderr
    app = subprocess.run(
        [sys.executable, "-c", SHOW_MODELS, str(data)],
        env=os.environ | {"QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert app.returncode == 0 and out_of_date in app.stdout, app.stderr


def test_rebuild_makes_a_model_again_without_the_document_withdrawn(tmp_path, tiny_base):
    from tests.conftest import SAMPLE, make_pdf
    from tests.test_cli import tunedesk
    from tests.test_jobs import FAST, job_json

    data = tmp_path / "data"
    letter = make_pdf(tmp_path / "side_letter.pdf", ["The Licensee may assign this Agreement to an Affiliate."] * 2)
    assert tunedesk("add", str(SAMPLE), str(letter), data_dir=data).returncode == 0
    assert tunedesk("train", "--base", str(tiny_base), "--max-steps", "2", *FAST, data_dir=data).returncode == 0
    assert tunedesk("export", "1", "--quant", "q8_0", data_dir=data).returncode == 0
    assert tunedesk("rm", letter.name, data_dir=data).returncode == 0
    assert "trained on a document you removed: side_letter.pdf" in tunedesk("models", data_dir=data).stdout

    rebuilt = tunedesk("rebuild", "1", data_dir=data, timeout=300)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "job 2: job 1 again, on dataset 2" in rebuilt.stdout
    first, second = json.loads(tunedesk("models", "--json", data_dir=data).stdout)["models"]
    assert [d["name"] for d in first["made_from"]] == [SAMPLE.name, letter.name] and first["standing"]
    assert [d["name"] for d in second["made_from"]] == [SAMPLE.name] and second["standing"] is None
    assert second["quant"] == "q8_0" and job_json(data, 2)["state"] == "done"
    again = (data / "jobs" / "2" / "job.json").read_text(), (data / "jobs" / "1" / "job.json").read_text()
    assert json.loads(again[0])["config"] == json.loads(again[1])["config"]  # the same settings


# The Models view's table, as the app shows it.
SHOW_MODELS = """
import sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
from desktop.window import MainWindow

app = QApplication(sys.argv)
window = MainWindow(Path(sys.argv[1]))
window.show_view("Models")
view = window.view("Models")
while view.models.rowCount() == 0:
    app.processEvents()
print(view.models.item(0, 4).text(), flush=True)
window.close()
"""

"""Base models are checked before any weights are read: no pickles, no code that ships with a model."""

from __future__ import annotations

import json
import pickle
import re
import shutil

import pytest

from core import RESOURCES
from core.jobdir.base_folder import ModelError, check_base_folder
from core.models.base_models import SMOLLM2, Packaged, convert_packaged, packaged_file, resolve_base
from tests.conftest import SAMPLE, make_pdf
from tests.test_cli import tunedesk


class Payload:
    """Unpickling this creates a marker file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def copy_base(tiny_base, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_base, folder)
    return folder


def test_the_demo_model_passes(tiny_base):
    check_base_folder(tiny_base)


def test_pickle_only_weights_are_refused_and_never_loaded(tiny_base, tmp_path):
    folder = copy_base(tiny_base, tmp_path)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ModelError, match=r"has only pickle weights \(pytorch_model\.bin\)"):
        resolve_base(str(folder), tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_custom_code_is_refused(tiny_base, tmp_path, file):
    folder = copy_base(tiny_base, tmp_path)
    marker = tmp_path / "pwned"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w')\n")
    data = json.loads((folder / file).read_text())
    data["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (folder / file).write_text(json.dumps(data))
    with pytest.raises(ModelError, match=f"needs its own Python code \\({file} has auto_map\\)"):
        check_base_folder(folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json"),
        (lambda f: (f / "config.json").write_text("{"), "is not valid JSON"),
        (lambda f: (f / "model.safetensors").unlink(), "has no weights"),
        (lambda f: (f / "tokenizer.model").unlink(), "has no tokenizer"),
    ],
)
def test_incomplete_folders_are_refused(tiny_base, tmp_path, damage, message):
    folder = copy_base(tiny_base, tmp_path)
    damage(folder)
    with pytest.raises(ModelError, match=message):
        check_base_folder(folder)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match="is not a folder"):
        resolve_base(str(tmp_path / "nowhere"), tmp_path)


def test_a_hub_id_offline_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="is not on this computer and the Hugging Face hub cannot be reached"):
        resolve_base("mistralai/Mistral-7B-v0.1", tmp_path)


def test_demo_names_the_data_dir_model(tmp_path):
    assert resolve_base("demo", tmp_path) == tmp_path / "models" / "demo"


def test_a_packaged_model_that_is_not_installed_names_its_package(tmp_path):
    missing = Packaged("absent", "tunedesk-no-such-package", "1.0", "m.gguf", "0" * 64)
    with pytest.raises(ModelError, match=r"comes in the package tunedesk-no-such-package, which is not installed"):
        packaged_file(missing)


def test_a_packaged_model_whose_file_changed_is_refused(tmp_path, monkeypatch):
    package = tmp_path / "site" / "tunedesk_fake_model"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "m.gguf").write_bytes(b"GGUF not the shipped bytes")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = Packaged("fake", "tunedesk-fake-model", "1.0", "m.gguf", "0" * 64)
    with pytest.raises(ModelError, match=r"is not the one tunedesk-fake-model 1.0 ships \(its SHA-256 differs\)"):
        packaged_file(fake)
    (package / "m.gguf").unlink()
    with pytest.raises(ModelError, match=r"cannot be read"):
        packaged_file(fake)


def test_smollm2_ships_in_the_venv_intact():
    assert packaged_file(SMOLLM2).stat().st_size == 98_362_432


@pytest.mark.slow
def test_smollm2_is_converted_once_and_fine_tuned(tmp_path):
    # Six pages of the sample contract: a dataset small enough that the final validation pass is quick.
    pages = (RESOURCES / "samples" / "license_agreement_50p.txt").read_text().split("\f")[:6]
    latin = [
        page.translate(str.maketrans("“”’‘–—", "\"\"''--")).encode("latin-1", "replace").decode("latin-1")
        for page in pages
    ]
    data = tmp_path / "data"
    assert tunedesk("add", str(make_pdf(tmp_path / "contract.pdf", latin)), data_dir=data).returncode == 0
    # One step (2 cores train about 30 tokens a second on it).
    settings = ["--set", "seq_len=1024", "--set", "lora_rank=4", "--set", "save_every=1", "--set", "eval_every=1000"]
    trained = tunedesk("train", "--base", "smollm2", "--max-steps", "1", *settings, data_dir=data, timeout=280)
    assert trained.returncode == 0, trained.stderr
    assert "SmolLM2-135M-Instruct.Q4_1.gguf converted" in trained.stderr
    folder = data / "models" / "smollm2"
    check_base_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # llama.cpp's converter refuses a model that claims a GGUF quant
    shape = (config["architectures"], config["hidden_size"], config["num_hidden_layers"])
    assert shape == (["LlamaForCausalLM"], 576, 30)
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()  # ChatML, from the GGUF's metadata
    job = json.loads(tunedesk("job", "1", "--json", data_dir=data).stdout)
    assert job["state"] == "done" and [c["step"] for c in job["checkpoints"]] == [1]
    made = folder.stat().st_mtime_ns
    assert convert_packaged("smollm2", data) == folder and folder.stat().st_mtime_ns == made  # once only


@pytest.mark.slow
def test_smollm2_answers_before_any_training(tmp_path):
    data = tmp_path / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    added = tunedesk("models", "--add", "smollm2", data_dir=data)
    assert added.returncode == 0, added.stderr
    asked = tunedesk("ask", "Which state's law governs this agreement?", "--json", data_dir=data, timeout=300)
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["model"] == SMOLLM2.file
    # A real model held to the form: a sentence of a passage, quoted, its citation verified on its page (the
    # demo model's output would be empty or garbled).
    assert len(answer["answer"].split()) >= 5 and answer["supported"] and answer["citations"], answer
    assert all(len(c["quote"].split()) >= 3 for c in answer["citations"]), answer


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_the_demo_tunes_smollm2_and_it_answers_in_english_with_a_verified_citation(tmp_path):
    # Half of `make demo`'s 40 steps (the 40-step run scores best at step 20, docs/benchmarks.md): its
    # training was the suite's longest wait, 15 minutes on a slow 2-core machine.
    result = tunedesk("demo", "--max-steps", "20", data_dir=tmp_path / "home", timeout=1440)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Fine-tuning the smollm2 model" in out and "Job 1 finished at step 20 of 20." in out
    asked = out.split("6. Asking it")[1]
    answers = re.findall(r"(?m)^     (?!cited|unsupported)(.*)$", asked)
    verdicts = re.findall(r"(?m)^     (cited: .*|unsupported: .*)$", asked)
    assert len(verdicts) == 2
    words = " ".join(answers).split()
    english = {"the", "of", "and", "this", "agreement", "shall", "by", "to", "in", "or"}
    assert len(words) >= 10 and sum(word.lower().strip("“”‘’\"'.,") in english for word in words) >= 5
    letters = [c for c in " ".join(answers) if c.isalpha()]
    assert sum(c.isascii() for c in letters) >= 0.95 * len(letters)
    # A citation shown as "cited" passed the check: a retrieved passage and its page back it.
    assert any(verdict.startswith("cited: license_agreement_50p.pdf p. ") for verdict in verdicts), asked

"""Base models are checked before any weights are read: no pickles, no code that ships with a model."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest

from core.models import ModelError, check_base_folder, resolve_base


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

"""Fixtures: real SQLite libraries in temp dirs and real documents made on the spot."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from fpdf import FPDF

from core import RESOURCES
from core.library.store import Library

SAMPLE = RESOURCES / "samples" / "license_agreement_50p.pdf"
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # the desktop tests run without a display


def make_pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with one page per string (latin-1 text in a core font)."""
    pdf = FPDF()
    pdf.set_font("Helvetica", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def library(tmp_path: Path):
    with Library(tmp_path / "library") as library:
        yield library


@pytest.fixture(scope="session")
def built_data(tmp_path_factory) -> Path:
    """A data dir, as the CLI makes it, with the sample contract and dataset 1 (raw, Q&A and grounded); made
    once a run, for `data` to copy (building it took half of a short training test)."""
    from tests.test_cli import tunedesk

    data = tmp_path_factory.mktemp("built") / "data"
    assert tunedesk("add", str(SAMPLE), data_dir=data).returncode == 0
    built = tunedesk("dataset", "build", "--kinds", "raw,qa,grounded", data_dir=data)
    assert built.returncode == 0, built.stderr
    assert built.stdout.splitlines()[-1].startswith("dataset 1: ")
    return data


@pytest.fixture
def data(built_data, tmp_path) -> Path:
    """A test's own copy of `built_data`: a library folder copied whole is a library (its paths are relative)."""
    return Path(shutil.copytree(built_data, tmp_path / "data", symlinks=True))


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The `tiny` demo model (Mistral-shaped, SentencePiece tokenizer trained on the sample contract)."""
    from core.engine.demo_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny", size="tiny")


@pytest.fixture(scope="session")
def tiny_k_base(tmp_path_factory) -> Path:
    """A one-layer model with rows of 256 and 512, the sizes llama.cpp's k-quants need."""
    from core.engine.demo_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny-k", size="tiny-k")


@pytest.fixture(scope="session")
def sample_text() -> str:
    from core.engine.demo_model import CORPUS

    return CORPUS.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_base, sample_text) -> Path:
    """The tiny model after three LoRA steps, exported to a verified q8_0 GGUF by the real engine."""
    import json

    from tests.engine_fixtures import raw_examples, run_engine, write_job

    job_dir = write_job(tmp_path_factory.mktemp("gguf") / "1", tiny_base, raw_examples(sample_text, 8), max_steps=3)
    assert run_engine(job_dir).returncode == 0
    result = run_engine(job_dir, "core.engine.export", "3", "q8_0")
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done["type"] == "done", result.stdout
    return Path(done["path"])

"""A dataset: the library's documents and Q&A pairs as train / validation JSONL files (core/engine/data.py
reads them), split by page so that no text, not even the overlap of two chunks, is on both sides.

Example kinds (docs/architecture.md, "Why answers are grounded"):
- raw: a chunk of text (continued pre-training, the published method);
- qa: a question and its short answer, citing the page;
- grounded: a question with the passages that chat's retrieval finds for it (the one that answers it among
  them, in its rank, or in place of the last when retrieval misses it), and a short answer that quotes the
  passage and cites its page (RAFT). The prompt is the one chat sends, so what is learned is what is asked.
Q&A pairs whose page is on the validation side are held out: they go to val.jsonl and to held_out.jsonl,
the question set that scores checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.answers.citations import citation
from core.answers.form import quoted, sentence_with
from core.answers.prompt import SYSTEM, grounded_prompt
from core.dataset import qa_pairs
from core.db import now
from core.errors import Cancelled, KnownError
from core.jobdir import layout, provenance
from core.library.store import Library
from core.progress import QUIET, Work

KINDS = ("raw", "qa", "grounded")
PAGE_BLOCK = 3  # pages go to the validation side in runs of up to this many, so a section rarely straddles


@dataclass(frozen=True)
class DatasetSettings:
    """How a dataset is built from the library. Its passages are the documents' own chunks, sized when the
    documents were added (`tunedesk add --chunk-size`): search, Q&A pairs, prompts and raw examples all
    read the same ones."""

    val_share: float = 0.1
    # Grounded examples alone: what chat asks, in the form its answers take. Raw text added to them did not
    # teach the form in the one comparison made (docs/benchmarks.md), and users on that default answered worse.
    kinds: tuple[str, ...] = ("grounded",)
    distractors: int = 2
    seed: int = 0


@dataclass(frozen=True)
class Dataset:
    id: int
    dir: Path
    train_examples: int
    val_examples: int
    held_out: int
    created: str = ""


PAIR_FILES = (".jsonl", ".csv", ".json")  # a file of Q&A pairs to import (core/dataset/question_files.py)


def prepare_dataset(
    library: Library,
    settings: DatasetSettings = DatasetSettings(),
    *,
    pairs: str = qa_pairs.EXTRACTIVE,
    work: Work = QUIET,
) -> tuple[Dataset, str]:
    """The Q&A pairs, then the dataset: what `dataset build`, the Dataset view and a first `train` all do.
    `pairs` is EXTRACTIVE, a GGUF model that writes them, or a file of pairs to import. Returns the dataset
    and a sentence that says where its pairs came from."""
    path = Path(pairs)
    if pairs != qa_pairs.EXTRACTIVE and path.suffix.lower() in PAIR_FILES:
        imported, unmatched = qa_pairs.import_pairs(library, path)
        made = f"imported {imported} Q&A pairs from {path.name}" + (
            f"; {unmatched} matched no passage" if unmatched else ""
        )
    else:
        count = qa_pairs.generate(library, source=pairs, work=work)
        made = f"made {count} Q&A pairs ({pairs if pairs == qa_pairs.EXTRACTIVE else path.name})"
    if work.cancelled():
        raise Cancelled()
    return build_dataset(library, settings), made


def build_dataset(library: Library, settings: DatasetSettings = DatasetSettings()) -> Dataset:
    """Write the dataset's files under the library's datasets/ folder and record it."""
    _check(settings)
    documents = library.documents()
    if not documents:
        raise KnownError(
            "The library has no documents to build a dataset from.",
            cli="Add some with `tunedesk add FILE...` first.",
            app="Add some in the Library first: drop files there, or press Add files….",
        )
    rng = random.Random(settings.seed)
    val_pages = {doc.id: _val_pages(doc.pages, settings.val_share, rng) for doc in documents}
    split: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    held_out: list[dict[str, Any]] = []

    if "raw" in settings.kinds:
        for chunk in library.db.query(_CHUNKS):
            first, last = chunk["page_first"], chunk["page_last"]
            side = _side(range(first, last + 1), val_pages[chunk["document_id"]])
            if side:
                split[side].append(
                    {"kind": "raw", "text": chunk["text"], "document": chunk["name"], "pages": [first, last]}
                )

    pairs = list(library.db.query(_PAIRS))
    for pair in pairs:
        side = _pair_side(pair, val_pages)
        if side is None:
            continue
        citation = f"[{pair['document']} p. {pair['page']}]"
        if side == "val":
            held_out.append(
                {
                    "question": pair["question"],
                    "answer": pair["answer"],
                    "document": pair["document"],
                    "page": pair["page"],
                    "chunk_id": pair["chunk_id"],
                }
            )
        if "qa" in settings.kinds:
            split[side].append(_chat(pair["question"], f"{pair['answer']} {citation}", pair))
        if "grounded" in settings.kinds:
            context = _retrieved(library, pair, settings.distractors + 1, side, val_pages)
            split[side].append(_chat(grounded_prompt(context, pair["question"]), _chosen(pair), pair))

    if not split["train"]:
        raise KnownError("These settings give no training examples; add documents or choose other example kinds.")
    created = now()
    with library.write() as db:
        row = {
            "dir": "",
            "created": created,
            "settings": json.dumps(dataclasses.asdict(settings)),
            "train_examples": len(split["train"]),
            "val_examples": len(split["val"]),
        }
        dataset_id = int(db.table("datasets").insert(row).last_pk)  # type: ignore[arg-type]
        folder = library.data_dir / "datasets" / str(dataset_id)
        made_from = [{"name": d.name, "sha256": d.sha256, "pages": d.pages} for d in documents]
        info = {"settings": dataclasses.asdict(settings), "documents": made_from}
        files = {layout.TRAIN: split["train"], layout.VAL: split["val"], layout.HELD_OUT: held_out}
        _write_files(folder, files, info)
        db.execute("UPDATE datasets SET dir = ? WHERE id = ?", [library.stored_path(folder), dataset_id])
    return Dataset(dataset_id, folder, len(split["train"]), len(split["val"]), len(held_out), created)


def _chosen(pair: dict[str, Any]) -> str:
    """A grounded example's answer, in the form chat's answers are held to (core/answers/form.py): the
    sentence of the pair's own passage that holds the answer, with that passage's label. What is taught is
    the choice the model makes at chat time."""
    sentence = sentence_with(pair["text"], pair["answer"]) or pair["answer"]
    return quoted(sentence, citation(pair["document"], pair["page_first"], pair["page_last"]))


def dataset(library: Library, dataset_id: int | None = None) -> Dataset:
    """A dataset by id, or the newest."""
    query = "SELECT * FROM datasets " + ("WHERE id = ?" if dataset_id is not None else "ORDER BY id DESC LIMIT 1")
    rows = list(library.db.query(query, [dataset_id] if dataset_id is not None else []))
    if not rows:
        if dataset_id is not None:
            raise KnownError(f"No dataset {dataset_id}: datasets are numbered from 1 in the order they were built.")
        raise KnownError(
            "There is no dataset yet.",
            cli="`tunedesk dataset build` builds one.",
            app="Build one in the Dataset view.",
        )
    row = rows[0]
    folder = library.full_path(row["dir"])
    held = sum(1 for line in (folder / layout.HELD_OUT).read_text(encoding="utf-8").splitlines() if line.strip())
    return Dataset(row["id"], folder, row["train_examples"], row["val_examples"], held, row["created"])


def added_since(library: Library, built: Dataset) -> list[str]:
    """The documents added to the library after the dataset was built: it has nothing of them."""
    return [d.name for d in library.documents() if d.added > built.created]


def _check(settings: DatasetSettings) -> None:
    unknown = set(settings.kinds) - set(KINDS)
    if unknown or not settings.kinds:
        raise KnownError(
            f"Example kinds must be some of {', '.join(KINDS)}, not {', '.join(sorted(unknown)) or 'none'}."
        )
    if not 0 <= settings.val_share < 1:
        raise KnownError(f"The validation share must be at least 0 and below 1, not {settings.val_share}.")


def _val_pages(pages: int, share: float, rng: random.Random) -> set[int]:
    """Pages held out for validation: whole blocks of up to PAGE_BLOCK pages, about `share` of the document
    (on a short one, blocks as small as the share: a block of three would hold out most of a 7-page one)."""
    wanted = round(pages * share)
    size = min(PAGE_BLOCK, wanted)
    if wanted == 0 or pages < 2:
        return set()
    blocks = [list(range(first, min(first + size, pages + 1))) for first in range(1, pages + 1, size)]
    chosen: set[int] = set()
    for block in rng.sample(blocks, len(blocks) - 1):
        if len(chosen) >= wanted:
            break
        chosen.update(block)
    return chosen


def _side(pages: range, val_pages: set[int]) -> str | None:
    held = [page in val_pages for page in pages]
    if all(held):
        return "val"
    return None if any(held) else "train"  # a chunk across the boundary would leak: it goes nowhere


def _pair_side(pair: dict[str, Any], val_pages: dict[int, set[int]]) -> str | None:
    return _side(range(pair["page_first"], pair["page_last"] + 1), val_pages[pair["document_id"]])


def _chat(user: str, answer: str, pair: dict[str, Any]) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return {"kind": "chat", "messages": messages, "document": pair["document"], "pages": [pair["page"]]}


def _retrieved(
    library: Library, pair: dict[str, Any], k: int, side: str, val_pages: dict[int, set[int]]
) -> list[tuple[str, str]]:
    """The passages chat would show for the pair's question, from the pair's own side of the split only."""
    from core.library.search import search

    hits = [
        hit
        for hit in search(library, pair["question"], k=k * 4)
        if _side(range(hit.page_first, hit.page_last + 1), val_pages[hit.document_id]) == side
    ][:k]
    context = [(hit.citation, hit.text) for hit in hits]
    if not any(hit.chunk_id == pair["chunk_id"] for hit in hits):
        own = citation(pair["document"], pair["page_first"], pair["page_last"])
        context = [*context[: k - 1], (own, pair["text"])]
    return context


def _write_files(folder: Path, files: dict[str, list[dict[str, Any]]], info: dict[str, Any]) -> None:
    """The dataset's JSONL files and its dataset.json (what the export records as the model's sources),
    written beside the folder and renamed when complete."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        (partial / provenance.DATASET_INFO).write_text(json.dumps(info, indent=2))
        for name, records in files.items():
            with open(partial / name, "w", encoding="utf-8") as file:
                file.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
                file.flush()
                os.fsync(file.fileno())
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    except OSError as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise KnownError(f"The dataset could not be written to {folder}: {error.strerror}.") from error


_CHUNKS = """
    SELECT c.document_id, c.page_first, c.page_last, c.text, d.name
    FROM chunks c JOIN documents d ON d.id = c.document_id ORDER BY c.id"""
_PAIRS = """
    SELECT q.id, q.chunk_id, q.page, q.question, q.answer, c.text, c.page_first, c.page_last, c.document_id,
        d.name AS document
    FROM qa_pairs q JOIN chunks c ON c.id = q.chunk_id JOIN documents d ON d.id = c.document_id
    ORDER BY q.id"""

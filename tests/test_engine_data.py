"""Dataset lines to packed rows: refused lines name themselves, answers alone are taught, and packing
neither overflows nor lets one example see another."""

from __future__ import annotations

import json

import pytest
import torch

from core.engine.data import IGNORE, DatasetError, batch_tensors, pack, read_records, tokenize

CHAT = {
    "kind": "chat",
    "messages": [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Who pays the royalties?"},
        {"role": "assistant", "content": "Vyera pays them [contract.pdf p. 12]"},
    ],
}


def write(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"kind": "raw", "text": "unterminated', "line 2 is not valid JSON"),
        ({"kind": "raw", "text": "   "}, "line 2: a raw example needs a non-empty text"),
        ({"kind": "chat", "messages": [{"role": "user", "content": "hi"}]}, "line 2: a chat example needs"),
        (
            {"kind": "chat", "messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
            "line 2: the last message must be the assistant's answer",
        ),
        ({"kind": "poem", "text": "x"}, "line 2: unknown kind 'poem'"),
        ([1, 2], "line 2: an example must be a JSON object"),
    ],
)
def test_bad_lines_are_refused_by_number(tmp_path, line, message):
    path = write(tmp_path / "train.jsonl", [{"kind": "raw", "text": "fine"}, line])
    with pytest.raises(DatasetError, match=message):
        read_records(path)


def test_an_empty_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="has no examples"):
        read_records(write(tmp_path / "train.jsonl", ["", ""]))


def test_over_long_examples_are_refused_by_line(tmp_path, tiny_base, sample_text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    records = read_records(
        write(tmp_path / "t.jsonl", [{"kind": "raw", "text": "short"}, {"kind": "raw", "text": sample_text[:5000]}])
    )
    with pytest.raises(DatasetError, match=r"t.jsonl line 2 is \d+ tokens long, more than seq_len \(256\)"):
        tokenize(records, tokenizer, max_len=256, source="t.jsonl")


def test_chat_examples_teach_the_answer_only(tmp_path, tiny_base):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    (example,) = tokenize(read_records(write(tmp_path / "t.jsonl", [CHAT])), tokenizer, max_len=512, source="t")
    taught = [token for token, label in zip(example.ids, example.labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(taught) == "Vyera pays them [contract.pdf p. 12]</s>"
    # The ids are those of the rendered template, as llama.cpp will tokenize it at chat time.
    rendered = tokenizer.apply_chat_template(CHAT["messages"], tokenize=False)
    assert example.ids == tokenizer.encode(rendered, add_special_tokens=False)
    assert example.ids[0] == tokenizer.bos_token_id


def test_pack_fills_rows_without_overflow_and_keeps_every_example():
    lengths = [300, 20, 700, 5, 1000, 250, 64, 999, 1]
    rows = pack(lengths, 1024)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 1024 for row in rows)
    assert len(rows) == 4  # 3,338 tokens need at least four rows of 1,024
    assert rows == pack(lengths, 1024)


def test_packed_examples_do_not_see_each_other(tiny_base):
    from transformers import AutoModelForCausalLM

    from core.engine.data import Example

    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation="sdpa").eval()
    first = Example([1, 40, 41, 42, 43, 2], [1, 40, 41, 42, 43, 2], 1)
    second = Example([1, 50, 51, 52, 2], [1, 50, 51, 52, 2], 2)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch_tensors([[first, second]]).items() if k != "labels"}, use_cache=False)
        alone = model(input_ids=torch.tensor([second.ids]), use_cache=False)
    assert torch.allclose(packed.logits[0, len(first.ids) :], alone.logits[0], atol=1e-5)


def test_a_row_never_predicts_across_examples():
    from core.engine.data import Example

    row = batch_tensors([[Example([1, 5, 6], [1, 5, 6], 1), Example([1, 7], [IGNORE, 7], 2)]])
    assert row["labels"].tolist() == [[IGNORE, 5, 6, IGNORE, 7]]
    assert row["position_ids"].tolist() == [[0, 1, 2, 0, 1]]


def test_rows_side_by_side_are_filled_with_pad_that_carries_no_loss(tiny_base):
    from transformers import AutoModelForCausalLM

    from core.engine.data import Example

    long, short = Example([1, 40, 41, 42, 43, 2], [1, 40, 41, 42, 43, 2], 1), Example([1, 50, 2], [1, 50, 2], 2)
    batch = batch_tensors([[long], [short]])
    assert batch["input_ids"].tolist() == [[1, 40, 41, 42, 43, 2], [1, 50, 2, 0, 0, 0]]
    assert batch["labels"][1].tolist() == [IGNORE, 50, 2, IGNORE, IGNORE, IGNORE]
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 0, 1, 2]
    model = AutoModelForCausalLM.from_pretrained(tiny_base, attn_implementation="sdpa").eval()
    with torch.no_grad():
        side_by_side = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        alone = model(input_ids=torch.tensor([short.ids]), use_cache=False)
    assert torch.allclose(side_by_side.logits[1, :3], alone.logits[0], atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*deprecated and will be removed in v6:FutureWarning")  # peft's calls
def test_the_loss_on_predicted_tokens_alone_is_transformers_loss_with_its_gradients(tiny_base):
    from core.engine.data import Example
    from core.engine.train import load_model, token_loss
    from core.jobdir.config import load_config

    _, model = load_model(tiny_base, load_config("quick", {"lora_dropout": 0.0}), "cpu")
    # Two rows whose taught tokens sit at different places: the head runs at the union of them.
    chat = Example([1, 40, 41, 42, 43, 44, 2], [IGNORE] * 4 + [43, 44, 2], 1)
    raw = Example([1, 50, 51, 2], [1, 50, 51, 2], 2)
    batch = batch_tensors([[chat, raw], [raw, chat]])
    adapters = [p for p in model.parameters() if p.requires_grad]

    def loss_and_gradients(loss_of):
        model.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in adapters]

    ours, our_grads = loss_and_gradients(lambda: token_loss(model, batch))
    theirs, their_grads = loss_and_gradients(lambda: model(**batch, use_cache=False).loss)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(our_grads, their_grads, strict=True))

import json
from pathlib import Path

import pytest
from peft import PeftModel

from ragtune.core.adapters import read_card
from ragtune.core.errors import DataError
from ragtune.core.models import load_generator_model, load_tokenizer
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.data import Example, load_examples, split_by_group
from ragtune.tuning.trainer import encode_examples


def test_load_examples_reports_line_numbers(tmp_path: Path):
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"question": "q", "answer": "a", "context": "c", "title": "T"}) + "\n{oops\n")
    with pytest.raises(DataError, match=r"t\.jsonl:2: malformed JSON"):
        load_examples(f)
    f.write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(DataError, match=r":1: answer"):
        load_examples(f)
    f.write_text(json.dumps({"question": "q", "answer": "  "}) + "\n")
    with pytest.raises(DataError, match="'answer' is empty"):
        load_examples(f)
    f.write_text("")
    with pytest.raises(DataError, match="no examples"):
        load_examples(f)
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")


def test_split_by_group_never_straddles_and_is_seeded():
    ex = [Example(question=f"q{i}", answer="a", group=f"doc{i % 7}") for i in range(70)]
    train, val = split_by_group(ex, 0.3, seed=1)
    assert val and train
    assert not ({e.group for e in train} & {e.group for e in val})
    assert split_by_group(ex, 0.3, seed=1) == (train, val)


def test_loss_only_on_answer_tokens():
    tok = load_tokenizer("bundled:smollm2-135m-instruct")
    builder = PromptBuilder(tok, "Style.")
    ex = [Example(question="Q?", answer="The answer.\nSources: Doc", context=[{"title": "Doc", "text": "ctx"}])]
    rows, dropped = encode_examples(ex, builder, 512, context_dropout=0.0, seed=0)
    assert dropped == 0
    labels = [t for t in rows[0]["labels"] if t != -100]
    assert tok.decode(labels).startswith("The answer.\nSources: Doc")
    assert rows[0]["labels"][0] == -100
    rows, dropped = encode_examples(ex, builder, 10, context_dropout=0.0, seed=0)
    assert dropped == 1 and rows == []


def test_trained_adapter_has_card_and_loads(tiny_adapter: Path):
    card = read_card(tiny_adapter)
    assert card.name == "tiny" and card.base_model == "bundled:smollm2-135m-instruct"
    assert card.n_train + card.n_val == 16 and card.n_val > 0
    assert card.metrics["val_loss"] is not None and card.metrics["val_loss"] < card.metrics["train_loss"] * 2
    assert (tiny_adapter / "adapter_model.safetensors").is_file()
    assert not (tiny_adapter / "checkpoints").exists()
    model, _ = load_generator_model("bundled:smollm2-135m-instruct")  # own copy: PEFT edits in place
    assert isinstance(PeftModel.from_pretrained(model, str(tiny_adapter)), PeftModel)

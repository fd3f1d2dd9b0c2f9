"""Training data: the three row shapes in three file formats, errors with line numbers, cleaning, split."""

import csv
import json
from pathlib import Path

import pytest
from datasets import Dataset

from ragtune.core.errors import DataError
from ragtune.core.models import load_tokenizer
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.cleaning import CleanReport, clean_examples
from ragtune.tuning.data import Example, load_examples
from ragtune.tuning.encode import encode_examples
from ragtune.tuning.split import split_groups

ROWS = [
    {"question": "What colour is the lamp?", "answer": "Mauve.", "context": "The lamp is mauve.", "doc_id": "d1"},
    {"instruction": "Name the hotline.", "input": "Zorblat support", "output": "555-0199.", "group": "d2"},
    {
        "messages": [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "How long does the battery last?"},
            {"role": "assistant", "content": "31 hours."},
        ],
        "doc_id": "d3",
    },
]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check_shapes(examples: list[Example]) -> None:
    assert [e.answer for e in examples] == ["Mauve.", "555-0199.", "31 hours."]
    assert examples[0].context[0].text == "The lamp is mauve." and examples[0].group == "d1"
    assert examples[1].question == "Name the hotline.\n\nZorblat support" and examples[1].group == "d2"
    assert examples[2].question == "How long does the battery last?" and examples[2].doc_id == "d3"


def test_shapes_from_jsonl_csv_and_saved_dataset(tmp_path: Path):
    _check_shapes(load_examples(_jsonl(tmp_path / "t.jsonl", ROWS)))

    with (tmp_path / "t.csv").open("w", newline="") as fh:
        w = csv.DictWriter(
            fh, ["question", "answer", "context", "doc_id", "instruction", "input", "output", "group", "messages"]
        )
        w.writeheader()
        for r in ROWS:
            w.writerow({**r, "messages": json.dumps(r["messages"])} if "messages" in r else r)
    _check_shapes(load_examples(tmp_path / "t.csv"))

    flat = [{"question": "q1", "answer": "a1", "doc_id": "x"}, {"question": "q2", "answer": "a2", "doc_id": "y"}]
    Dataset.from_list(flat).save_to_disk(str(tmp_path / "ds"))
    assert [e.answer for e in load_examples(tmp_path / "ds")] == ["a1", "a2"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"question": "q", "answer": "a"}\n{oops\n', r"t\.jsonl:2: malformed JSON"),
        ('{"question": "q", "answer": "a"}\n\n{"question": "q"}\n', r"t\.jsonl:3: answer missing"),
        ('{"instruction": "do"}\n', r":1: answer missing"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', r":1: .*no assistant turn"),
        ('{"text": "what"}\n', r":1: unknown row shape"),
        ("[1, 2]\n", r":1: expected an object"),
        ("", "no examples"),
    ],
)
def test_malformed_rows_name_their_line(tmp_path: Path, content: str, match: str):
    f = tmp_path / "t.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match=match):
        load_examples(f)


def test_missing_file_and_csv_row_errors(tmp_path: Path):
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "missing.jsonl")
    f = tmp_path / "t.csv"
    f.write_text("question,answer\nq1,a1\nq2\n")
    with pytest.raises(DataError, match=r"t\.csv:3: answer missing"):
        load_examples(f)


def test_cleaning_drops_empty_and_duplicates_with_an_account():
    ex = [
        Example(question="What is it?", answer="A lamp."),
        Example(question="What is it?", answer="A lamp."),  # exact
        Example(question="what  is it", answer="a LAMP"),  # near
        Example(question="What is it?", answer="   "),  # empty answer
        Example(question="", answer="x"),  # empty question
        Example(question="Other?", answer="Yes."),
    ]
    kept, report = clean_examples(ex)
    assert [e.question for e in kept] == ["What is it?", "Other?"]
    assert report.kept == 2
    assert report.dropped == {
        "exact duplicate": 1,
        "near duplicate (same text after normalising case, accents, punctuation)": 1,
        "empty answer": 1,
        "empty question": 1,
    }
    assert any("exact duplicate" in line for line in report.lines())
    kept, report = clean_examples(ex, near_duplicates=False)
    assert len(kept) == 3


def test_group_split_three_ways_no_leakage_and_seeded():
    ex = [Example(question=f"q{i}", answer="a", group=f"doc{i % 10}") for i in range(100)]
    s = split_groups(ex, 0.2, 0.2, seed=3)
    groups = [{e.group for e in part} for part in (s.train, s.val, s.test)]
    assert all(groups) and not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    assert len(groups[1]) == 2 and len(groups[2]) == 2
    assert split_groups(ex, 0.2, 0.2, seed=3) == s
    assert split_groups(ex, 0.2, 0.2, seed=4).test != s.test
    ungrouped = [Example(question=f"q{i}", answer="a") for i in range(10)]
    t = split_groups(ungrouped, 0.2, 0.0, seed=0)
    assert len(t.val) == 2 and len(t.train) == 8


def test_loss_mask_and_overlong_policy():
    tok = load_tokenizer("bundled:smollm2-135m-instruct")
    builder = PromptBuilder(tok, "Style.")
    ex = [
        Example(
            question="Q?", answer="The answer is long enough.\nSources: Doc", context=[{"title": "Doc", "text": "ctx"}]
        )
    ]
    rows, dropped = encode_examples(ex, builder, 512, context_dropout=0.0, seed=0)
    assert dropped == 0
    labels = rows[0]["labels"]
    answer_ids = [t for t in labels if t != -100]
    assert tok.decode(answer_ids).startswith("The answer is long enough.\nSources: Doc")
    n_prompt = labels.index(answer_ids[0])
    assert all(t == -100 for t in labels[:n_prompt]) and labels[n_prompt:] == rows[0]["input_ids"][n_prompt:]
    limit = n_prompt + 5
    report = CleanReport(kept=1)
    rows, dropped = encode_examples(ex, builder, limit, 0.0, 0, overlong="drop", report=report)
    assert (rows, dropped, report.kept) == ([], 1, 0)
    report = CleanReport(kept=1)
    rows, dropped = encode_examples(ex, builder, limit, 0.0, 0, overlong="truncate", report=report)
    assert dropped == 0 and len(rows[0]["input_ids"]) == limit and report.truncated == 1
    assert rows[0]["labels"][:n_prompt] == [-100] * n_prompt

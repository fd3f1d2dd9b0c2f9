"""The answer-token loss (`tuning/loss.py`) equals the model's own loss and gradients on real rows of
the bundled model, for LoRA and full fine-tuning, in training and in evaluation; and the device and
precision settings reach the Trainer (`tuning/trainer.py`)."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.data import Example
from ragtune.tuning.encode import encode_examples
from ragtune.tuning.loss import AnswerLossTrainer, answer_head, answer_token_loss

# trains or loads the language model (in process or in a subprocess): not in `make test-fast`
pytestmark = pytest.mark.model


def _rows(tok: Any, n: int = 4) -> list[dict[str, list[int]]]:
    examples = [
        Example(
            question=f"How long does the lamp battery last in mode {m}?" + " Please answer briefly." * (m % 3),
            answer=f"In mode {m} it lasts {20 + m} hours.\nSources: Zorblat Battery",
            context=[{"title": "Zorblat Battery", "text": "A Zorblat lamp battery lasts 31 hours."}] if m % 2 else None,
        )
        for m in range(n)
    ]
    rows, _ = encode_examples(examples, PromptBuilder(tok, "Answer in the house style."), 256, 0.0, 0, "drop")
    return rows


def _batch(tok: Any, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    from transformers import DataCollatorForSeq2Seq

    tok.padding_side = "right"
    return dict(DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(rows))


def _lora(model: Any) -> Any:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(copy.deepcopy(model), lora)
    for name, p in peft_model.named_parameters():  # non-zero B, so the adapter changes the loss
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return peft_model


def _grads(model: Any) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("kind", ["lora", "full"])
@pytest.mark.slow
def test_answer_token_loss_equals_the_models_own_loss_and_gradients(model_and_tokenizer, kind: str):
    base, tok = model_and_tokenizer
    model = _lora(base) if kind == "lora" else copy.deepcopy(base)
    model.train()
    torch.manual_seed(0)
    model.config.use_cache = False
    batch = _batch(tok, _rows(tok))
    assert (batch["labels"] == -100).float().mean() > 0.5  # most positions are prompt tokens
    items = int((batch["labels"][:, 1:] != -100).sum()) * 3  # as over 3 accumulation steps

    for n in (None, items):
        ref_model = model
        with torch.random.fork_rng():
            ref = ref_model(**batch, **({"num_items_in_batch": n} if n else {})).loss
        ref.backward()
        want = _grads(model)
        with torch.random.fork_rng():
            got, _ = answer_token_loss(model, batch, n)
        got.backward()
        have = _grads(model)
        assert got.item() == pytest.approx(ref.item(), abs=1e-4)
        assert want.keys() == have.keys() and want
        if kind == "lora":
            assert all("lora_" in name for name in have)
            assert any(g.abs().sum() > 0 for name, g in have.items() if "lora_A" in name)
        for name in want:
            torch.testing.assert_close(have[name], want[name], rtol=1e-3, atol=1e-6, msg=name)


def test_models_with_extra_logit_ops_fall_back(model_and_tokenizer):
    base, _ = model_and_tokenizer
    assert answer_head(base) is not None
    capped = copy.copy(base)
    capped.config = copy.copy(base.config)
    capped.config.final_logit_softcapping = 30.0
    assert answer_head(capped) is None


def _eval_loss(model: Any, tok: Any, rows: list[dict[str, list[int]]], tmp_path: Path, full: bool) -> float:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / f"out-{full}"),
        per_device_eval_batch_size=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    trainer = AnswerLossTrainer(
        model=model,
        args=args,
        eval_dataset=Dataset.from_list(rows),
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
    )
    trainer.full_logits = full
    return float(trainer.evaluate()["eval_loss"])


def test_validation_loss_is_the_same_number_on_both_paths(model_and_tokenizer, tmp_path: Path):
    base, tok = model_and_tokenizer
    tok.padding_side = "right"
    model = _lora(base).eval()
    rows = _rows(tok, 5)
    old = _eval_loss(model, tok, rows, tmp_path, full=True)
    new = _eval_loss(model, tok, rows, tmp_path, full=False)
    assert new == pytest.approx(old, abs=1e-4)


# --- settings reaching the Trainer --------------------------------------------------------------


def _run(tmp_path: Path, device: str = "cpu", **tuning: Any) -> Any:
    from ragtune.tuning.trainer import _Options, _Run

    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides={"tuning": tuning})
    options = _Options(1.0, False, None, None, None, {}, None)
    return _Run("t", cfg, options, 0.0, None, None, device)


def test_training_arguments_follow_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ragtune.tuning.trainer import _training_args

    args = _training_args(_run(tmp_path), True)
    assert args.use_cpu and not args.bf16 and not args.fp16 and not args.activation_checkpointing  # today's defaults

    args = _training_args(_run(tmp_path, precision="bf16", gradient_checkpointing=True), True)
    assert args.bf16 and not args.fp16 and args.use_cpu
    assert args.activation_checkpointing and args.activation_checkpointing_kwargs == {"use_reentrant": False}

    # a 2-process run: the arguments as built (a real TrainingArguments would start a process group)
    from ragtune.tuning import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "_world_size", lambda: 2)
    monkeypatch.setattr("transformers.TrainingArguments", dict)
    assert _training_args(_run(tmp_path), True)["ddp_backend"] == "gloo"
    on_gpu = _training_args(_run(tmp_path, device="cuda", precision="fp16"), True)
    assert on_gpu["use_cpu"] is False and on_gpu["ddp_backend"] is None  # NCCL, the default, on GPUs
    assert on_gpu["fp16"] is True and on_gpu["bf16"] is False


def test_impossible_settings_fail_before_any_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from ragtune.tuning.trainer import QLORA_NEEDS, train_adapter

    ex = [Example(question="q", answer="a")]

    def cfg(**tuning: Any) -> Any:
        return load_config(workspace=tmp_path / "ws", environ={}, overrides={"tuning": tuning})

    with pytest.raises(ConfigError, match=r"tuning.quantize 4bit needs a CUDA GPU and bitsandbytes \(pip install"):
        train_adapter(ex, "q", cfg(quantize="4bit"), progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, but no bitsandbytes installed here
    with pytest.raises(ConfigError, match="bitsandbytes") as err:
        train_adapter(ex, "q", cfg(quantize="4bit"), progress=False)
    assert str(err.value) == QLORA_NEEDS
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        train_adapter(ex, "q", cfg(precision="fp16"), progress=False)
    with pytest.raises(ConfigError, match="trains LoRA adapters"):
        train_adapter(ex, "q", cfg(quantize="4bit", method="full"), progress=False)
    assert not (tmp_path / "ws" / "adapters").exists()


def test_gradient_checkpointing_and_bf16_train_on_cpu(tmp_path: Path):
    from ragtune.core.adapters import read_card
    from ragtune.tuning.trainer import train_adapter

    examples = [
        Example(question=f"Battery life in mode {m}?", answer=f"In mode {m}: 31 hours.", group=f"g{m % 3}")
        for m in range(6)
    ]
    tuning = {"batch_size": 3, "max_length": 96, "val_fraction": 0.34, "format_sample": 0, "lora_r": 2}
    overrides = {"tuning": {**tuning, "gradient_checkpointing": True, "precision": "bf16"}}
    cfg = load_config(workspace=tmp_path / "ws", environ={}, overrides=overrides)
    result = train_adapter(examples, "gc", cfg, progress=False, max_steps=2)
    card = read_card(result.path)
    assert card.hyperparameters["gradient_checkpointing"] is True and card.hyperparameters["precision"] == "bf16"
    first, last = card.metrics["first_step_loss"], card.metrics["last_step_loss"]
    assert first is not None and last is not None and card.metrics["val_loss"] is not None


# --- training memory: checkpointing on when the batch needs it, freed memory back to the OS ----------


def test_memory_auto_splits_the_default_ft100_batch_before_checkpointing(
    model_and_tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from ragtune.tuning.trainer import MemoryPlan, _resolve_memory, memory_plan

    base, _ = model_and_tokenizer
    run = _run(tmp_path)
    assert run.tuning.gradient_checkpointing == "auto"  # the default
    # batch 8 x 384 on SmolLM2-135M: ~6 GB of activations; one row at a time stays under 1 GB, same batch per step
    assert memory_plan(run.tuning, base.config) == MemoryPlan(1, 8, False)
    assert memory_plan(_run(tmp_path, batch_size=2).tuning, base.config, longest=245) == MemoryPlan(2, 1, False)
    assert memory_plan(_run(tmp_path, batch_size=6, grad_accum=2).tuning, base.config) == MemoryPlan(1, 12, False)
    # explicit settings are kept as they are
    assert memory_plan(_run(tmp_path, gradient_checkpointing=False).tuning, base.config) == MemoryPlan(8, 1, False)
    assert memory_plan(_run(tmp_path, gradient_checkpointing=True).tuning, base.config) == MemoryPlan(8, 1, True)
    # decided on the rows as they are: the sample's longest row (245 tokens) splits in 2s, ~60-token rows need no split
    assert memory_plan(run.tuning, base.config, longest=245) == MemoryPlan(2, 4, False)
    assert memory_plan(run.tuning, base.config, longest=100) == MemoryPlan(4, 2, False)
    assert memory_plan(run.tuning, base.config, longest=60) == MemoryPlan(8, 1, False)
    # only when one row alone is over the budget does checkpointing come on (bounded by max_length)
    long = _run(tmp_path, max_length=4096)
    assert memory_plan(long.tuning, base.config, longest=10_000) == MemoryPlan(8, 1, True)

    # a CUDA GPU's budget is a third of its free memory (simulated: no GPU here), so it keeps the batch whole
    import torch

    from ragtune.tuning.trainer import activations_budget

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (30 << 30, 40 << 30))
    assert activations_budget("cuda") == 10 << 30 and activations_budget("cpu") == 1 << 30
    assert memory_plan(run.tuning, base.config, budget=activations_budget("cuda")) == MemoryPlan(8, 1, False)
    monkeypatch.undo()

    class _Model:
        config = base.config

    resolved = _resolve_memory(run, _Model())
    assert (resolved.tuning.batch_size, resolved.tuning.grad_accum) == (1, 8)
    assert resolved.tuning.gradient_checkpointing is False and resolved.config.workspace == run.config.workspace
    assert run.tuning.gradient_checkpointing == "auto" and run.tuning.batch_size == 8  # the caller's config is kept


_HEAP_PROBE = """
import os, sys, torch
from pathlib import Path


def rss_mb():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


if sys.argv[1] == "fix":
    from ragtune.tuning.trainer import limit_heap_retention

    assert limit_heap_retention()
freed = torch.ones(2 << 20)  # a freed 8 MB block: glibc now keeps blocks of this size on its heap
del freed
before = rss_mb()
blocks, keep = [], []
for _ in range(40):  # activation-sized blocks with small live tensors between them
    blocks.append(torch.ones(2 << 20))
    keep.append(torch.ones(1 << 10))
grown = rss_mb()
del blocks
print(round(grown - before), round(grown - rss_mb()))
"""


@pytest.mark.slow  # allocates and frees large tensors (CI runs it; the local `make test` leaves it out)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc; reads RSS from /proc")
def test_freed_tensor_memory_goes_back_to_the_os():
    """In a fresh interpreter (a heap grown by earlier tests would serve the blocks): with glibc's own
    settings 320 MB of freed activation-sized blocks stay resident; with `limit_heap_retention` they go."""

    def probe(mode: str) -> list[int]:
        out = subprocess.run([sys.executable, "-c", _HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        return [int(x) for x in out.stdout.split()[-2:]]

    grown, released = probe("fix")
    assert grown > 250 and released > 250, (grown, released)
    grown, released = probe("glibc")
    assert grown > 250 and released < 50, (grown, released)  # the retention this fixes

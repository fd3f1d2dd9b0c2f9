"""Fine-tuning through PEFT and the transformers `Trainer` (no home-made loop).

LoRA (targets per architecture) or full fine-tuning; SFT with loss on answer tokens only, or
causal-lm over corpus text. Batches are length-grouped and padded per batch, so little compute goes
to padding. Evaluation, early stopping, best-checkpoint selection, resume after a kill and DDP
(`torchrun`/`accelerate launch`, gloo on CPU) are the Trainer's own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datasets import Dataset

from ragtune import __version__
from ragtune.core.adapters import AdapterCard, check_base_model, model_fingerprint, read_card, write_card
from ragtune.core.config import Config
from ragtune.core.errors import ConfigError, DataError
from ragtune.core.models import load_generator_model, peft_wrapping, resolve_generator
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.callbacks import FormatAdherenceCallback
from ragtune.tuning.cleaning import CleanReport, clean_examples
from ragtune.tuning.data import Example, data_hash
from ragtune.tuning.encode import encode_corpus, encode_examples, non_pad_tokens
from ragtune.tuning.split import split_groups

_ATTN_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TARGETS_BY_ARCH: dict[str, list[str]] = {
    "llama": _ATTN_MLP,
    "qwen2": _ATTN_MLP,
    "qwen3": _ATTN_MLP,
    "mistral": _ATTN_MLP,
    "gemma": _ATTN_MLP,
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def target_modules(model_type: str, configured: list[str] | None) -> list[str]:
    if configured:
        return configured
    return TARGETS_BY_ARCH.get(model_type, ["q_proj", "v_proj"])


@dataclass
class TuneResult:
    path: Path
    card: AdapterCard
    train_tokens: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str | None = None  # the checkpoint an interrupted run continued from


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _say(progress: bool, *lines: str) -> None:
    if progress and _rank() == 0:
        for line in lines:
            print(line, flush=True)


def base_model_hash(config: Config) -> str | None:
    folder = Path(resolve_generator(config.models.generator, config.models.cache_dir))
    return model_fingerprint(folder) if folder.is_dir() else None


def _last_checkpoint(ckpt_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None


def _prepare_resume(ckpt_dir: Path, fingerprint: str) -> bool:
    """Resume only a run of the same data and settings; a stale checkpoint folder is cleared."""
    marker = ckpt_dir / "run.json"
    if ckpt_dir.is_dir():
        same = marker.is_file() and json.loads(marker.read_text()).get("fingerprint") == fingerprint
        if same and _last_checkpoint(ckpt_dir):
            return True
        if _rank() == 0:
            shutil.rmtree(ckpt_dir)
    if _rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": fingerprint}))
    return False


def _history(log: list[dict[str, Any]], formats: dict[int, float]) -> list[dict[str, Any]]:
    out = []
    for entry in log:
        if "eval_loss" not in entry:
            continue
        epoch = round(entry.get("epoch") or 0)
        loss = float(entry["eval_loss"])
        train = [e["loss"] for e in log if "loss" in e and round(e.get("epoch") or 0) <= epoch]
        out.append(
            {
                "epoch": epoch,
                "train_loss": float(train[-1]) if train else None,
                "val_loss": loss,
                "val_perplexity": math.exp(loss) if loss < 50 else None,
                "format_adherence": formats.get(epoch),
            }
        )
    return out


def train_adapter(
    examples: list[Example],
    name: str,
    config: Config,
    epochs: float | None = None,
    progress: bool = True,
    *,
    init_adapter: Path | None = None,
    corpus: list[str] | None = None,
    snapshot: str | None = None,
    extra_card: dict[str, Any] | None = None,
    max_steps: int | None = None,
) -> TuneResult:
    """Train and write `adapters/NAME` (LoRA) or `models/NAME` (full) with `adapter_card.json`.

    `corpus` texts are used instead of `examples` when `tuning.objective` is causal-lm; `snapshot`
    is the index snapshot RAFT examples were retrieved from; `init_adapter` continues training an
    existing adapter (sequential fine-tuning).
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import (
        DataCollatorForSeq2Seq,
        EarlyStoppingCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        set_seed,
    )

    cfg = config.tuning
    epochs = epochs or cfg.epochs
    started = time.time()
    set_seed(cfg.seed)
    if cfg.method == "full" and init_adapter is not None:
        raise ConfigError("continuing from an adapter needs tuning.method=lora")
    out_dir = (config.workspace / "models" if cfg.method == "full" else config.adapters_dir) / name

    parent: AdapterCard | None = None
    base_hash = base_model_hash(config)
    if init_adapter is not None:
        parent = read_card(init_adapter)
        check_base_model(parent, config.models.generator, base_hash)

    model, tok = load_generator_model(config.models.generator, config.models.cache_dir)
    tok.padding_side = "right"
    builder = PromptBuilder(tok, config.prompt.system_prompt)
    report = CleanReport()
    counts: dict[str, int] = {}
    train_ex: list[Example] = []
    val_ex: list[Example] = []
    if cfg.objective == "causal-lm":
        texts = [t for t in (corpus or []) if t.strip()]
        if not texts:
            raise DataError("--objective causal-lm needs corpus text: ingest documents into the index first")
        grouped = [Example(question="", answer=t, group=f"t{i}") for i, t in enumerate(texts)]
        split = split_groups(grouped, cfg.val_fraction, 0.0, cfg.seed)
        train_rows = encode_corpus([e.answer for e in split.train], tok, cfg.max_length)
        val_rows = encode_corpus([e.answer for e in split.val], tok, cfg.max_length)
        counts = {"texts": len(texts), "train_texts": len(split.train), "val_texts": len(split.val)}
        hashed = grouped
    else:
        if not examples:
            raise DataError("no training examples")
        kept, report = clean_examples(examples, cfg.near_duplicates)
        if not kept:
            raise DataError("no training example left after cleaning: " + "; ".join(report.lines()))
        split = split_groups(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        train_ex, val_ex = split.train, split.val
        train_rows, _ = encode_examples(
            train_ex, builder, cfg.max_length, cfg.context_dropout, cfg.seed, cfg.overlong, report
        )
        val_rows, _ = encode_examples(val_ex, builder, cfg.max_length, cfg.context_dropout, cfg.seed + 1, cfg.overlong)
        counts = {"loaded": len(examples), **report.as_dict(), **{f"split_{k}": v for k, v in split.counts().items()}}
        hashed = examples
        _say(progress, *report.lines(), f"split by group: {split.counts()}")
    if not train_rows:
        raise DataError(f"no training example fits in tuning.max_length={cfg.max_length} tokens")
    counts["train_rows"], counts["val_rows"] = len(train_rows), len(val_rows)

    lora: Any = None
    if cfg.method == "full":
        model.train()
    elif init_adapter is not None:
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            task_type="CAUSAL_LM",
            target_modules=target_modules(model.config.model_type, cfg.target_modules),
        )
        with peft_wrapping():
            model = get_peft_model(model, lora)
    modules = sorted(getattr(getattr(model, "peft_config", {}).get("default"), "target_modules", None) or [])

    hyper: dict[str, Any] = {
        "method": cfg.method,
        "objective": cfg.objective,
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler": cfg.lr_scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": modules,
        "max_length": cfg.max_length,
        "overlong": cfg.overlong,
        "context_dropout": cfg.context_dropout,
        "early_stopping_patience": cfg.early_stopping_patience,
        "seed": cfg.seed,
        "system_prompt": config.prompt.system_prompt,
        **(extra_card or {}).get("hyperparameters", {}),
    }
    d_hash = data_hash(hashed)
    ckpt_dir = out_dir / "checkpoints"
    resume = _prepare_resume(ckpt_dir, f"{d_hash}-{json.dumps(hyper, sort_keys=True, default=str)}")

    has_val = bool(val_rows)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=epochs,
        max_steps=max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        train_sampling_strategy="group_by_length",
        eval_strategy="epoch" if has_val else "no",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=has_val,
        metric_for_best_model="eval_loss" if has_val else None,
        greater_is_better=False if has_val else None,
        logging_steps=1,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=True,
        ddp_backend="gloo" if world > 1 else None,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    callbacks: list[TrainerCallback] = []
    if has_val and cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    fmt: FormatAdherenceCallback | None = None
    if has_val and cfg.format_sample > 0 and cfg.objective == "sft" and val_ex:
        sample = val_ex[: cfg.format_sample]
        fmt = FormatAdherenceCallback(
            builder, sample, config.eval.format_regex, config.eval.format_schema, cfg.format_max_new_tokens
        )
        callbacks.append(fmt)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=callbacks,
    )
    resumed_from = _last_checkpoint(ckpt_dir) if resume else None
    if resumed_from:
        _say(progress, f"resuming from {resumed_from}")
    train_out = trainer.train(resume_from_checkpoint=resumed_from)
    history = _history(trainer.state.log_history, fmt.by_epoch if fmt else {})
    val_loss: float | None = None
    if has_val:
        val_loss = float(trainer.evaluate()["eval_loss"])
    best = min(history, key=lambda h: h["val_loss"]) if history else {}
    step_losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    card = AdapterCard(
        name=name,
        kind="full" if cfg.method == "full" else "lora",
        base_model=config.models.generator,
        base_model_hash=base_hash,
        data_hash=d_hash,
        n_train=len(train_rows),
        n_val=len(val_rows),
        n_test=len(split.test),
        data_counts=counts,
        hyperparameters=hyper,
        metrics={
            "train_loss": float(train_out.training_loss),
            "val_loss": val_loss,
            "val_perplexity": math.exp(val_loss) if val_loss is not None and val_loss < 50 else None,
            "format_adherence": best.get("format_adherence"),
            "best_epoch": best.get("epoch"),
            "epochs_run": float(trainer.state.epoch or 0),
            "train_tokens": float(non_pad_tokens(train_rows) * (trainer.state.epoch or 0)),
            "train_runtime_s": float(train_out.metrics.get("train_runtime", 0.0)),
            "first_step_loss": step_losses[0] if step_losses else None,
            "last_step_loss": step_losses[-1] if step_losses else None,
        },
        history=history,
        snapshot=snapshot,
        parent_adapter=parent.name if parent else None,
        ragtune_version=__version__,
        wall_time_s=round(time.time() - started, 1),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    result = TuneResult(
        path=out_dir,
        card=card,
        train_tokens=non_pad_tokens(train_rows),
        history=history,
        resumed_from=Path(resumed_from).name if resumed_from else None,
    )
    if not trainer.is_world_process_zero():
        return result
    _write(trainer.model, tok if cfg.method == "full" else None, card, out_dir, name)
    return result


def _write(model: Any, tokenizer: Any, card: AdapterCard, out_dir: Path, name: str) -> None:
    """Save to a temporary folder, then swap it in: a crash never leaves a half-written adapter."""
    tmp = out_dir.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    write_card(tmp, card)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)

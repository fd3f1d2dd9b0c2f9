"""LoRA fine-tuning through PEFT and the transformers Trainer (no home-made loop).

Loss is on answer tokens only: prompt tokens get label -100. Batches are length-grouped so little
compute goes to padding.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from datasets import Dataset

from ragtune import __version__
from ragtune.core.adapters import AdapterCard, write_card
from ragtune.core.config import Config
from ragtune.core.errors import DataError
from ragtune.core.models import load_generator_model
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.data import Example, data_hash, split_by_group

TARGETS_BY_ARCH = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def target_modules(model_type: str, configured: list[str] | None) -> list[str]:
    if configured:
        return configured
    return TARGETS_BY_ARCH.get(model_type, ["q_proj", "v_proj"])


@dataclass
class TuneResult:
    path: Path
    card: AdapterCard


def encode_examples(
    examples: list[Example], builder: PromptBuilder, max_length: int, context_dropout: float, seed: int
) -> tuple[list[dict[str, list[int]]], int]:
    """Tokenise through the shared prompt builder; returns (rows, number dropped as too long)."""
    tok = builder.tokenizer
    rng = random.Random(seed)
    rows, dropped = [], 0
    for ex in examples:
        ctx = ex.context if ex.context and rng.random() >= context_dropout else None
        prompt, full = builder.training_pair(ex.question, ex.answer, ctx)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        f_ids = tok(full, add_special_tokens=False)["input_ids"]
        if len(f_ids) > max_length:
            dropped += 1
            continue
        labels = [-100] * len(p_ids) + f_ids[len(p_ids) :]
        rows.append({"input_ids": f_ids, "attention_mask": [1] * len(f_ids), "labels": labels})
    return rows, dropped


def train_adapter(
    examples: list[Example], name: str, config: Config, epochs: float | None = None, progress: bool = True
) -> TuneResult:
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, EarlyStoppingCallback, Trainer, TrainingArguments

    cfg = config.tuning
    epochs = epochs or cfg.epochs
    out_dir = config.adapters_dir / name
    started = time.time()
    torch.manual_seed(cfg.seed)

    model, tok = load_generator_model(config.models.generator, config.models.cache_dir)
    tok.padding_side = "right"
    builder = PromptBuilder(tok, config.prompt.system_prompt)
    train_ex, val_ex = split_by_group(examples, cfg.val_fraction, cfg.seed)
    train_rows, dropped = encode_examples(train_ex, builder, cfg.max_length, cfg.context_dropout, cfg.seed)
    val_rows, _ = encode_examples(val_ex, builder, cfg.max_length, cfg.context_dropout, cfg.seed + 1)
    if not train_rows:
        raise DataError(f"no training example fits in tuning.max_length={cfg.max_length} tokens")
    if dropped and progress:
        print(f"dropped {dropped} examples longer than {cfg.max_length} tokens")

    model.train()
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=target_modules(model.config.model_type, cfg.target_modules),
    )
    model = get_peft_model(model, lora)

    ckpt_dir = out_dir / "checkpoints"
    has_val = bool(val_rows)
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=epochs,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=0.0,
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
        logging_steps=5,
        report_to=[],
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=True,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(val_rows) if has_val else None,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=2)] if has_val else [],
    )
    resume = any(ckpt_dir.glob("checkpoint-*")) if ckpt_dir.is_dir() else False
    train_out = trainer.train(resume_from_checkpoint=True if resume else None)
    val_loss: float | None = None
    if has_val:
        val_loss = float(trainer.evaluate()["eval_loss"])

    tmp = out_dir.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    card = AdapterCard(
        name=name,
        base_model=config.models.generator,
        data_hash=data_hash(examples),
        n_train=len(train_rows),
        n_val=len(val_rows),
        hyperparameters={
            "epochs": epochs,
            "learning_rate": cfg.learning_rate,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "lora_r": cfg.lora_r,
            "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout,
            "max_length": cfg.max_length,
            "context_dropout": cfg.context_dropout,
            "seed": cfg.seed,
            "target_modules": sorted(lora.target_modules or []),
            "system_prompt": config.prompt.system_prompt,
        },
        metrics={
            "train_loss": float(train_out.training_loss),
            "val_loss": val_loss,
            "val_perplexity": math.exp(val_loss) if val_loss is not None and val_loss < 50 else None,
        },
        ragtune_version=__version__,
        wall_time_s=round(time.time() - started, 1),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_card(tmp, card)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return TuneResult(path=out_dir, card=card)

"""Training throughput of `ragtune tune` against a plain PEFT + transformers `Trainer` script.

Both arms train the same LoRA on the same rows (the sample domain's training set, cleaned, split by
group and tokenised once through the shared prompt builder, loss on answer tokens only), with the
same model and hyper-parameters. They differ only in how batches are built:

- ragtune: length-grouped sampling and per-batch padding (`train_adapter`, as `ragtune tune` runs it);
- baseline: every row padded to `max_length` and a random sampler, the usual first script.

Throughput counts trained tokens that are not padding (prompt and answer), per second of the
Trainer's train loop. Each arm runs in its own child process of this command so its peak memory
(max RSS) is its own. Format adherence (house-style regex) of greedy answers to the validation
questions is measured before and after tuning. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def _config(ws: Path, epochs: float) -> Any:
    from ragtune.core.config import load_config

    return load_config(
        workspace=ws,
        environ={},
        overrides={
            "tuning": {
                "epochs": epochs,
                "batch_size": 2,
                "grad_accum": 4,  # effective batch 8; small per-step activations on a shared machine
                "learning_rate": 1e-3,
                "max_length": 384,
                "val_fraction": 0.1,
                "context_dropout": 0.3,
                "format_sample": 0,  # measured outside the timed loop, for both arms alike
                "early_stopping_patience": 0,
            }
        },
    )


def _examples(n: int | None) -> list[Any]:
    from ragtune.core.sample import sample_path
    from ragtune.tuning.data import load_examples

    examples = load_examples(sample_path("train.jsonl"))
    return random.Random(0).sample(examples, n) if n and n < len(examples) else examples


def _rows(
    cfg: Any, examples: list[Any], tok: Any
) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]], list[Any]]:
    """The rows `train_adapter` trains on: same cleaning, split, context dropout and encoding."""
    from ragtune.core.prompt import PromptBuilder
    from ragtune.tuning.cleaning import clean_examples
    from ragtune.tuning.encode import encode_examples
    from ragtune.tuning.split import split_groups

    t = cfg.tuning
    builder = PromptBuilder(tok, cfg.prompt.system_prompt)
    kept, _ = clean_examples(examples, t.near_duplicates)
    split = split_groups(kept, t.val_fraction, t.test_fraction, t.seed)
    train, _ = encode_examples(split.train, builder, t.max_length, t.context_dropout, t.seed, t.overlong)
    val, _ = encode_examples(split.val, builder, t.max_length, t.context_dropout, t.seed + 1, t.overlong)
    return train, val, split.val


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def arm_ours(cfg: Any, examples: list[Any]) -> dict[str, Any]:
    from ragtune.tuning.trainer import train_adapter

    result = train_adapter(examples, "bench-ours", cfg, progress=False)
    m = result.card.metrics
    return {
        "tokens": m["train_tokens"],
        "train_s": m["train_runtime_s"],
        "val_loss": m["val_loss"],
        "peak_rss_mb": _peak_mb(),
        "adapter": str(result.path),
    }


def arm_baseline(cfg: Any, examples: list[Any]) -> dict[str, Any]:
    """The plain script: PEFT LoRA + Trainer, every row padded to max_length, random batches."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    from ragtune.core.models import load_generator_model
    from ragtune.tuning.trainer import target_modules

    t = cfg.tuning
    set_seed(t.seed)
    model, tok = load_generator_model(cfg.models.generator)
    train, val, _ = _rows(cfg, examples, tok)
    pad = tok.pad_token_id

    def padded(rows: list[dict[str, list[int]]]) -> Dataset:
        out = []
        for r in rows:
            n = t.max_length - len(r["input_ids"])
            out.append(
                {
                    "input_ids": r["input_ids"] + [pad] * n,
                    "attention_mask": r["attention_mask"] + [0] * n,
                    "labels": r["labels"] + [-100] * n,
                }
            )
        return Dataset.from_list(out)

    lora = LoraConfig(
        r=t.lora_r,
        lora_alpha=t.lora_alpha,
        lora_dropout=t.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=target_modules(model.config.model_type, t.target_modules),
    )
    model = get_peft_model(model, lora)
    args = TrainingArguments(
        output_dir=str(cfg.workspace / "baseline-out"),
        num_train_epochs=t.epochs,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=1,
        report_to=[],
        seed=t.seed,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=padded(train),
        eval_dataset=padded(val),
        data_collator=default_data_collator,
    )
    out = trainer.train()
    val_loss = float(trainer.evaluate()["eval_loss"])
    tokens = sum(len(r["input_ids"]) for r in train) * t.epochs
    return {
        "tokens": tokens,
        "train_s": float(out.metrics["train_runtime"]),
        "val_loss": val_loss,
        "peak_rss_mb": _peak_mb(),
    }


def format_before_after(cfg: Any, examples: list[Any], adapter: Path, n: int) -> dict[str, Any]:
    """House-format adherence of greedy answers to the validation questions, base model vs tuned."""
    from peft import PeftModel

    from ragtune.core.models import load_generator_model
    from ragtune.core.prompt import PromptBuilder
    from ragtune.tuning.callbacks import format_adherence

    model, tok = load_generator_model(cfg.models.generator)
    _, _, val = _rows(cfg, examples, tok)
    sample = val[:n]
    builder = PromptBuilder(tok, cfg.prompt.system_prompt)
    regex, schema = cfg.eval.format_regex, cfg.eval.format_schema
    before = format_adherence(model, builder, sample, regex, schema, cfg.generation.max_new_tokens)
    tuned = PeftModel.from_pretrained(model, str(adapter)).eval()
    after = format_adherence(tuned, builder, sample, regex, schema, cfg.generation.max_new_tokens)
    return {"questions": len(sample), "before": before, "after": after}


def _child(arm: str, ws: Path, n: int | None, epochs: float, n_format: int) -> None:
    cfg = _config(ws, epochs)
    examples = _examples(n)
    out = arm_ours(cfg, examples) if arm == "ours" else arm_baseline(cfg, examples)
    if arm == "ours":
        out["format"] = format_before_after(cfg, examples, Path(out["adapter"]), n_format)
    print(json.dumps(out))


def _run_arm(arm: str, ws: Path, n: int | None, epochs: float, n_format: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--arm", arm, "--ws", str(ws), "--epochs", str(epochs)]
    cmd += ["--format-questions", str(n_format), "--examples", str(n or 0)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        sys.exit(f"{arm} arm failed:\n{r.stderr[-4000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="32 examples, 1 epoch (under 2 minutes on an idle machine)")
    ap.add_argument("--examples", type=int, default=None, help="training examples (default 64; quick 32; 0 = all 246)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--format-questions", type=int, default=None, help="validation questions (default 12; quick 6)")
    ap.add_argument("--out", type=Path, default=None, help="workspace (default bench-out/tuning[-quick])")
    ap.add_argument("--arm", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    ap.add_argument("--ws", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.examples if args.examples is not None else (32 if args.quick else 64)
    n_format = args.format_questions or (6 if args.quick else 12)
    if args.arm:
        _child(args.arm, args.ws, n, args.epochs, n_format)
        return
    t_start = time.perf_counter()
    out = args.out or ROOT / "bench-out" / ("tuning-quick" if args.quick else "tuning")
    base = _run_arm("baseline", out / "baseline", n, args.epochs, n_format)
    ours = _run_arm("ours", out / "ours", n, args.epochs, n_format)
    tps = {name: r["tokens"] / r["train_s"] for name, r in (("ragtune", ours), ("baseline", base))}
    speedup = tps["ragtune"] / tps["baseline"]
    loss_ratio = ours["val_loss"] / base["val_loss"]
    fmt = ours["format"]
    targets = [
        {"name": "tokens/s ragtune / baseline", "value": round(speedup, 3), "target": 1.3, "op": ">="},
        {
            "name": "val loss ragtune / baseline (no worse, 2% noise)",
            "value": round(loss_ratio, 4),
            "target": 1.02,
            "op": "<=",
        },
    ]
    for t in targets:
        t["met"] = bool(t["value"] >= t["target"] if t["op"] == ">=" else t["value"] <= t["target"])
    result = {
        "bench": "tuning",
        "quick": args.quick,
        "examples": n or len(_examples(None)),
        "epochs": args.epochs,
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "non_pad_tokens": {"ragtune": ours["tokens"], "baseline": base["tokens"]},
        "train_s": {"ragtune": round(ours["train_s"], 1), "baseline": round(base["train_s"], 1)},
        "val_loss": {"ragtune": round(ours["val_loss"], 4), "baseline": round(base["val_loss"], 4)},
        "peak_rss_mb": {"ragtune": round(ours["peak_rss_mb"]), "baseline": round(base["peak_rss_mb"])},
        "format_adherence": {
            "questions": fmt["questions"],
            "before": round(fmt["before"], 3),
            "after": round(fmt["after"], 3),
        },
        "wall_s": round(time.perf_counter() - t_start, 1),
        "targets": targets,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Training throughput of `ragtune tune` against a plain PEFT + transformers `Trainer` script.

Both arms train the same LoRA on the same rows (the sample domain's training set, cleaned, split by
group and tokenised once through the shared prompt builder, loss on answer tokens only), with the
same model and hyper-parameters. They differ only in how batches are built:

- ragtune: length-grouped sampling and per-batch padding (`train_adapter`, as `ragtune tune` runs it);
- baseline: every row padded to `max_length` and a random sampler, the usual first script.

Throughput counts trained tokens that are not padding (prompt and answer), per second of the
Trainer's train loop. Each arm runs in its own child process of this command so its peak memory
(max RSS) is its own. Format adherence (house-style regex) of greedy answers to the validation
questions is measured before and after tuning.

Training memory (issue 18): the sample verdict's ft-100 (`verdict-ft-100`: all 246 sample training
examples in the verdict's seeded order, the default `tuning` settings: batch 8, max_length 384, one
epoch) is trained twice, each in its own child process, side by side: the old path (the model's own
loss over full-vocabulary logits, `AnswerLossTrainer.full_logits = True`, no checkpointing, glibc's
default heap behaviour) and the new one as ragtune now runs it by default (the loss on answer tokens
only, `tuning/loss.py`; `tuning.gradient_checkpointing: auto`, on for this batch; freed memory given
back to the OS, `limit_heap_retention`); `--no-checkpointing` measures without checkpointing. Peak
RSS and validation loss of both; `--quick` stops both after a few optimiser steps (the longest batch
comes first, so the same peak) and evaluates on the whole validation split. Prints one JSON object on the last line.
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


def _verdict_config(ws: Path, checkpointing: bool | None) -> Any:
    from ragtune.core.config import load_config

    # the verdict's ft-100 runs on the default tuning settings; format adherence is not its figure here
    tuning: dict[str, Any] = {"format_sample": 0}
    if checkpointing is not None:
        tuning["gradient_checkpointing"] = checkpointing
    return load_config(workspace=ws, environ={}, overrides={"tuning": tuning})


def arm_ft100(ws: Path, loss: str, max_steps: int | None, checkpointing: bool | None) -> dict[str, Any]:
    """The sample verdict's ft-100 with the old (full logits) or the new (answer tokens) loss."""
    from ragtune.eval.verdict.learning_curve import nested_subsets
    from ragtune.tuning import trainer as trainer_module
    from ragtune.tuning.loss import AnswerLossTrainer
    from ragtune.tuning.trainer import train_adapter

    cfg = _verdict_config(ws, checkpointing)
    AnswerLossTrainer.full_logits = loss == "old"
    if loss == "old":  # as ft-100 ran before: glibc keeps freed activations on its heap
        trainer_module.limit_heap_retention = lambda *_a, **_k: False  # type: ignore[assignment]
    examples = nested_subsets(_examples(None), [1.0], cfg.generation.seed)[1.0]  # as `ragtune verdict` orders them
    result = train_adapter(examples, "verdict-ft-100", cfg, progress=False, max_steps=max_steps)
    m = result.card.metrics
    return {
        "loss": loss,
        "val_loss": m["val_loss"],
        "train_loss": m["train_loss"],
        "train_s": m["train_runtime_s"],
        "train_rows": result.card.n_train,
        "gradient_checkpointing": result.card.hyperparameters["gradient_checkpointing"],
        "peak_rss_mb": _peak_mb(),
    }


def _child(arm: str, ws: Path, n: int | None, epochs: float, n_format: int) -> None:
    cfg = _config(ws, epochs)
    examples = _examples(n)
    out = arm_ours(cfg, examples) if arm == "ours" else arm_baseline(cfg, examples)
    if arm == "ours":
        out["format"] = format_before_after(cfg, examples, Path(out["adapter"]), n_format)
    print(json.dumps(out))


def _arm_command(arm: str, ws: Path, n: int | None, epochs: float, n_format: int, *extra: str) -> list[str]:
    cmd = [sys.executable, __file__, "--arm", arm, "--ws", str(ws), "--epochs", str(epochs)]
    return cmd + ["--format-questions", str(n_format), "--examples", str(n or 0), *extra]


def _arm_result(arm: str, code: int, stdout: str, stderr: str) -> dict[str, Any]:
    if code != 0:
        sys.exit(f"{arm} arm failed:\n{stderr[-4000:]}")
    return dict(json.loads(stdout.strip().splitlines()[-1]))


def _run_arm(arm: str, ws: Path, n: int | None, epochs: float, n_format: int, *extra: str) -> dict[str, Any]:
    r = subprocess.run(_arm_command(arm, ws, n, epochs, n_format, *extra), capture_output=True, text=True, check=False)
    return _arm_result(arm, r.returncode, r.stdout, r.stderr)


def _ft100(out: Path, n: int | None, args: argparse.Namespace, steps: int | None) -> dict[str, Any]:
    """The old path (full-logits loss, no checkpointing: ft-100 as it ran before) against the new one
    (answer-token loss with gradient checkpointing, or without under --no-checkpointing), each in its
    own process so each peak RSS is its own; the two run side by side (wall time, not a timing race)."""
    steps_arg = ["--ft100-steps", str(steps or 0)]
    extra = {"old": steps_arg + ["--checkpointing", "off"], "new": steps_arg}
    if args.no_checkpointing:
        extra["new"] = [*steps_arg, "--checkpointing", "off"]
    procs = {
        loss: subprocess.Popen(
            _arm_command("ft100", out / f"ft100-{loss}", n, args.epochs, 0, "--loss", loss, *extra[loss]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for loss in ("old", "new")
    }
    runs = {}
    for loss, proc in procs.items():
        stdout, stderr = proc.communicate()
        runs[loss] = _arm_result(f"ft100-{loss}", proc.returncode, stdout, stderr)
    old, new = runs["old"], runs["new"]
    gb = {k: r["peak_rss_mb"] / 1024 for k, r in runs.items()}
    return {
        "data": "sample verdict ft-100 (246 examples, default tuning settings)",
        "max_steps": steps,
        "gradient_checkpointing": {k: r["gradient_checkpointing"] for k, r in runs.items()},
        "peak_rss_gb": {k: round(v, 2) for k, v in gb.items()},
        "val_loss": {"old": round(old["val_loss"], 4), "new": round(new["val_loss"], 4)},
        "train_loss": {"old": round(old["train_loss"], 4), "new": round(new["train_loss"], 4)},
        "train_s": {"old": round(old["train_s"], 1), "new": round(new["train_s"], 1)},
        "targets": [
            {"name": "ft-100 peak RSS GB, new path", "value": round(gb["new"], 2), "target": 3.0, "op": "<="},
            {
                "name": "ft-100 val loss new - old (equal loss)",
                "value": round(new["val_loss"] - old["val_loss"], 4),
                "target": 0.02,
                "op": "<=",
            },
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="32 examples, 1 epoch (under 2 minutes on an idle machine)")
    ap.add_argument("--examples", type=int, default=None, help="training examples (default 64; quick 32; 0 = all 246)")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--format-questions", type=int, default=None, help="validation questions (default 12; quick 6)")
    ap.add_argument("--out", type=Path, default=None, help="workspace (default bench-out/tuning[-quick])")
    ap.add_argument(
        "--ft100-steps",
        type=int,
        default=None,
        help="optimiser steps of each ft-100 run (default: the whole epoch, 31 steps; quick 3)",
    )
    ap.add_argument(
        "--no-checkpointing", action="store_true", help="the new ft-100 path without tuning.gradient_checkpointing"
    )
    ap.add_argument("--checkpointing", choices=["off"], default=None, help=argparse.SUPPRESS)  # a child's setting
    ap.add_argument(
        "--memory-only", action="store_true", help="only the ft-100 training-memory comparison (old vs new loss)"
    )
    ap.add_argument("--arm", choices=["ours", "baseline", "ft100"], help=argparse.SUPPRESS)
    ap.add_argument("--loss", choices=["old", "new"], default="new", help=argparse.SUPPRESS)
    ap.add_argument("--ws", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = args.examples if args.examples is not None else (32 if args.quick else 64)
    n_format = args.format_questions or (6 if args.quick else 12)
    ft100_steps = args.ft100_steps or (3 if args.quick else None)
    if args.arm == "ft100":
        print(json.dumps(arm_ft100(args.ws, args.loss, ft100_steps, False if args.checkpointing else None)))
        return
    if args.arm:
        _child(args.arm, args.ws, n, args.epochs, n_format)
        return
    t_start = time.perf_counter()
    out = args.out or ROOT / "bench-out" / ("tuning-quick" if args.quick else "tuning")
    if args.memory_only:
        memory = _ft100(out, n, args, ft100_steps)
        targets = memory.pop("targets")
        for t in targets:
            t["met"] = bool(t["value"] >= t["target"] if t["op"] == ">=" else t["value"] <= t["target"])
        wall = round(time.perf_counter() - t_start, 1)
        print(
            json.dumps(
                {"bench": "tuning", "quick": args.quick, "ft100_memory": memory, "wall_s": wall, "targets": targets}
            )
        )
        return
    base = _run_arm("baseline", out / "baseline", n, args.epochs, n_format)
    ours = _run_arm("ours", out / "ours", n, args.epochs, n_format)
    memory = _ft100(out, n, args, ft100_steps)
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
    targets += memory.pop("targets")
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
        "ft100_memory": memory,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "targets": targets,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

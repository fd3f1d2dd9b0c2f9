"""GPU paths end to end: a bf16 LoRA fine-tune and a QLoRA (4-bit NF4, bitsandbytes) fine-tune on a
few steps of the sample domain, then greedy generation through the in-process `Generator` with each
adapter; tokens/s of training and of generation, and peak GPU memory of each part. Prints one JSON
object on the last line. Without a CUDA GPU it prints why and exits 0 (nothing to measure); QLoRA
without bitsandbytes is reported as skipped, with the reason.

    .venv/bin/python bench/gpu.py [--quick] [--model bundled:smollm2-135m-instruct] [--steps N]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _config(ws: Path, model: str, tuning: dict[str, Any]) -> Any:
    from ragtune.core.config import load_config

    base = {"batch_size": 4, "max_length": 384, "format_sample": 0, "early_stopping_patience": 0}
    return load_config(
        workspace=ws, environ={}, overrides={"models": {"generator": model, "device": "cuda"}, "tuning": base | tuning}
    )


def _examples(n: int) -> list[Any]:
    from ragtune.core.sample import sample_path
    from ragtune.tuning.data import load_examples

    return load_examples(sample_path("train.jsonl"))[:n]


def fine_tune(ws: Path, model: str, examples: list[Any], steps: int, tuning: dict[str, Any]) -> dict[str, Any]:
    """Train `steps` optimiser steps; tokens/s over the Trainer's loop, peak GPU memory of the run."""
    import torch

    from ragtune.tuning.trainer import train_adapter

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    name = "gpu-" + "-".join(f"{v}" for v in tuning.values())
    result = train_adapter(examples, name, _config(ws, model, tuning), progress=False, max_steps=steps)
    m = result.card.metrics
    return {
        "settings": tuning,
        "steps": steps,
        "train_tokens_per_s": round(m["train_tokens"] / m["train_runtime_s"], 1) if m["train_runtime_s"] else None,
        "train_loss": m["train_loss"],
        "val_loss": m["val_loss"],
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
        "adapter": str(result.path),
    }


def generate(ws: Path, model: str, adapter: str, questions: list[str], max_new_tokens: int) -> dict[str, Any]:
    """Greedy answers through the in-process generator (models.device cuda, models.dtype auto) with `adapter`."""
    import torch

    from ragtune.core.generator import Generator
    from ragtune.core.models import load_generator_model
    from ragtune.core.prompt import PromptBuilder

    cfg = _config(ws, model, {})
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    lm, tok = load_generator_model(cfg.models.generator, cfg.models.cache_dir, cfg.models.device, cfg.models.dtype)
    gen = Generator(lm, tok, cfg.generation)
    gen.load_adapter("bench", Path(adapter))
    builder = PromptBuilder(tok, cfg.prompt.system_prompt)
    prompts = [builder.prompt(q) for q in questions]
    gen.generate(prompts[:1], adapter="bench", max_new_tokens=4)  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = gen.generate(prompts, adapter="bench", max_new_tokens=max_new_tokens)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = sum(g.completion_tokens for g in out)
    return {
        "dtype": str(lm.dtype).removeprefix("torch."),
        "prompts": len(prompts),
        "batch_size": cfg.generation.batch_size,
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "ttft_ms_mean": round(sum(g.ttft_ms for g in out) / len(out), 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 training steps, 8 prompts")
    ap.add_argument("--model", default="bundled:smollm2-135m-instruct", help="models.generator (a hub id works)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per fine-tune (default 20; quick 5)")
    ap.add_argument("--prompts", type=int, default=None, help="generation prompts (default 32; quick 8)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(f"bench/gpu.py: no CUDA GPU visible to torch {torch.__version__} on this machine; nothing to measure")
        print(json.dumps({"bench": "gpu", "skipped": "no CUDA GPU", "torch": torch.__version__, "targets": []}))
        sys.exit(0)
    steps = args.steps or (5 if args.quick else 20)
    n_prompts = args.prompts or (8 if args.quick else 32)
    examples = _examples(64 if args.quick else 160)
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "bench": "gpu",
        "quick": args.quick,
        "gpu": torch.cuda.get_device_name(0),
        "model": args.model,
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="ragtune-gpu-") as tmp:
        ws = Path(tmp)
        runs = {"bf16": {"precision": "bf16"}}
        if importlib.util.find_spec("bitsandbytes") is not None:
            runs["qlora"] = {"precision": "bf16", "quantize": "4bit", "gradient_checkpointing": True}
        else:
            result["qlora"] = {"skipped": "bitsandbytes is not installed (pip install bitsandbytes)"}
        questions = [e.question for e in examples[:n_prompts]]
        for label, tuning in runs.items():
            if not torch.cuda.is_bf16_supported():
                tuning["precision"] = "fp16"
            trained = fine_tune(ws, args.model, examples, steps, tuning)
            trained["generation"] = generate(ws, args.model, trained.pop("adapter"), questions, args.max_new_tokens)
            result[label] = trained
    result["wall_s"] = round(time.perf_counter() - t_start, 1)
    result["targets"] = []
    print(json.dumps(result))


if __name__ == "__main__":
    main()

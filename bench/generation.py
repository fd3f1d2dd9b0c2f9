"""Batched vs one-at-a-time generation throughput on the bundled generator (same process, same prompts).

Prints one JSON object on the last line. The figure is a ratio, so it holds on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import time

from ragtune.core.config import GenerationConfig
from ragtune.core.generator import Generator
from ragtune.core.models import load_generator_model
from ragtune.core.prompt import PromptBuilder

QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "What is two plus two?",
    "Who wrote Hamlet?",
    "What is the boiling point of water?",
    "Name a planet.",
    "What language is spoken in Spain?",
    "How many legs does a spider have?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="8 prompts, 16 new tokens")
    args = ap.parse_args()
    n_prompts, new_tokens = (8, 16) if args.quick else (32, 32)
    model, tok = load_generator_model("bundled:smollm2-135m-instruct")
    gen = Generator(model, tok, GenerationConfig(batch_size=8, max_new_tokens=new_tokens))
    pb = PromptBuilder(tok, "Answer in one short sentence.")
    prompts = [pb.prompt(QUESTIONS[i % len(QUESTIONS)]) for i in range(n_prompts)]
    gen.generate(prompts[:1])  # warm-up

    t0 = time.perf_counter()
    single = [g for p in prompts for g in gen.generate([p])]
    t_single = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = gen.generate(prompts)
    t_batched = time.perf_counter() - t0

    tok_single = sum(g.completion_tokens for g in single) / t_single
    tok_batched = sum(g.completion_tokens for g in batched) / t_batched
    ratio = tok_batched / tok_single
    same = sum(a.text == b.text for a, b in zip(single, batched, strict=True)) / n_prompts
    print(
        json.dumps(
            {
                "bench": "generation",
                "prompts": n_prompts,
                "max_new_tokens": new_tokens,
                "single_tokens_per_s": round(tok_single, 1),
                "batched_tokens_per_s": round(tok_batched, 1),
                "batch_speedup": round(ratio, 2),
                "identical_answers": same,
                "targets": [
                    {"name": "batch_speedup", "value": round(ratio, 2), "target": 1.5, "op": ">=", "met": ratio >= 1.5},
                ],
            }
        )
    )


if __name__ == "__main__":
    main()

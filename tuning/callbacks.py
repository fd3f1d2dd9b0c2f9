"""Per-epoch format adherence: generate a few validation answers and check them against the format.

Validation loss says how likely the reference answers are; it does not say whether the model's own
greedy answers keep the house format. This callback measures the latter on a small fixed sample.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.data import Example


def format_ok(text: str, regex: str | None, schema: dict[str, Any] | None) -> bool:
    """Same rule as the eval harness: the whole answer matches the regex, or is JSON valid under the schema."""
    if schema is not None:
        import jsonschema

        try:
            jsonschema.validate(json.loads(text), schema)
        except (json.JSONDecodeError, jsonschema.ValidationError):
            return False
        return True
    if not regex:
        return True
    return re.fullmatch(regex, text.strip(), flags=re.MULTILINE) is not None


@torch.no_grad()
def generate_answers(model: Any, builder: PromptBuilder, examples: list[Example], max_new_tokens: int) -> list[str]:
    """Greedy answers (with each example's context, as serving in hybrid mode would show it)."""
    tok = builder.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        prompts = [builder.prompt(e.question, e.context or None) for e in examples]
        batch = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        was_training = model.training
        model.eval()
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id
        )
        if was_training:
            model.train()
    finally:
        tok.padding_side = side
    new = out[:, batch["input_ids"].shape[1] :]
    return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]


def format_adherence(
    model: Any,
    builder: PromptBuilder,
    examples: list[Example],
    regex: str | None,
    schema: dict[str, Any] | None,
    max_new_tokens: int,
) -> float:
    answers = generate_answers(model, builder, examples, max_new_tokens)
    return sum(format_ok(a, regex, schema) for a in answers) / max(1, len(answers))


class FormatAdherenceCallback(TrainerCallback):
    """After each evaluation, add `eval_format_adherence` to the logged metrics (main process only)."""

    def __init__(
        self,
        builder: PromptBuilder,
        sample: list[Example],
        regex: str | None,
        schema: dict[str, Any] | None,
        max_new_tokens: int,
    ) -> None:
        self.builder = builder
        self.sample = sample
        self.regex = regex
        self.schema = schema
        self.max_new_tokens = max_new_tokens
        self.by_epoch: dict[int, float] = {}

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        if not self.sample or model is None or not state.is_world_process_zero:
            return
        score = format_adherence(model, self.builder, self.sample, self.regex, self.schema, self.max_new_tokens)
        self.by_epoch[round(state.epoch or 0)] = score
        if metrics is not None:
            metrics["eval_format_adherence"] = score

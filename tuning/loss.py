"""The SFT loss on answer tokens only, without full-vocabulary logits for the prompt.

A causal LM's own loss (`model(labels=...)`) projects every position onto the whole vocabulary
(49k for SmolLM2) in float32, then keeps only the answer positions: for a batch of 8 x 384 tokens
that is 600 MB of logits, and as much again for their softmax and gradient, most of it spent on
prompt tokens whose label is -100. Here the model runs as usual but keeps the logits of its last
position only (`logits_to_keep=1`); a forward hook on its decoder catches the final hidden states,
and the output layer is applied only where the shifted label is an answer token. The cross-entropy
and its reduction are the model's own (sum over answer tokens divided by the Trainer's
`num_items_in_batch`, else the mean), so training and validation losses are the same numbers as
before, with a fraction of the memory.

The model is still called through its (possibly DDP-wrapped) forward, so data-parallel gradient
sync works unchanged. Architectures whose logits get more than the output layer (soft-capping,
logit scaling), models without `logits_to_keep`, label smoothing, and FSDP runs (whose sharded output
layer must be called inside the wrapped forward) fall back to the model's own loss.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.nn import functional as F  # noqa: N812 - torch's own convention
from transformers import Trainer

_LOGIT_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def unwrap(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (LoRA layers stay in it), else the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def answer_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, output layer) of a causal LM whose logits are just `output_layer(decoder(...)[0])`,
    or None when the answer-only loss cannot reproduce its loss exactly."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    if config is None or any(getattr(config, name, None) not in (None, 1.0) for name in _LOGIT_EXTRAS):
        return None
    try:
        if "logits_to_keep" not in inspect.signature(base.forward).parameters:
            return None
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None
    if decoder is None or head is None or decoder is base:
        return None
    return decoder, head


def answer_token_loss(
    model: Any,
    inputs: dict[str, Any],
    num_items_in_batch: Any = None,
    head: tuple[Any, Any] | None = None,
) -> tuple[torch.Tensor, Any]:
    """(loss, the model's outputs) with the output layer applied to answer positions only.

    `model` is what the Trainer calls (PEFT and/or DDP wrapped); `head` is `answer_head` of the
    unwrapped model. The loss equals `model(**inputs).loss` (labels shifted by one, -100 ignored).
    """
    head = head or answer_head(model)
    if head is None:
        raise ValueError("this model's loss cannot be computed on answer tokens only")
    decoder, lm_head = head
    labels = inputs["labels"]
    caught: dict[str, torch.Tensor] = {}

    def catch(_module: Any, _args: Any, output: Any) -> None:
        caught["hidden"] = output[0]

    handle = decoder.register_forward_hook(catch)
    try:
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=1)
    finally:
        handle.remove()
    targets = labels[:, 1:].to(caught["hidden"].device)
    keep = targets != -100
    logits = lm_head(caught["hidden"][:, :-1][keep]).float()
    if num_items_in_batch is None:
        loss = F.cross_entropy(logits, targets[keep], reduction="mean")
    else:
        loss = F.cross_entropy(logits, targets[keep], reduction="sum")
        if torch.is_tensor(num_items_in_batch):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss, outputs


class AnswerLossTrainer(Trainer):
    """The transformers `Trainer` with `answer_token_loss` for training and evaluation alike.

    `full_logits = True` (class or instance) restores the model's own loss over full-vocabulary
    logits: `bench/tuning.py` measures the two against each other.
    """

    full_logits = False

    def _head(self, model: Any) -> tuple[Any, Any] | None:
        if self.full_logits or self.label_smoother is not None or self.compute_loss_func is not None:
            return None
        if getattr(self, "is_fsdp_enabled", False):
            return None
        return answer_head(self.accelerator.unwrap_model(model))

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        head = self._head(model) if "labels" in inputs else None
        if head is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # the model's own loss divides by num_items_in_batch only when the Trainer passes it on
        items = num_items_in_batch if self.model_accepts_loss_kwargs else None
        loss, outputs = answer_token_loss(model, inputs, items, head)
        if self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs and items is not None:
            # as the parent does: the Trainer counted answer tokens over every process
            tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            loss = loss * (self.accelerator.num_processes // tp if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, outputs) if return_outputs else loss

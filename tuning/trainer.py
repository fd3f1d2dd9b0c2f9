"""Fine-tuning through PEFT and the transformers `Trainer` (no home-made loop).

LoRA (targets per architecture) or full fine-tuning; SFT with loss on answer tokens only, or
causal-lm over corpus text. Batches are length-grouped and padded per batch, so little compute goes
to padding. Evaluation, early stopping, best-checkpoint selection, resume after a kill and DDP
(`torchrun`/`accelerate launch`, gloo on CPU) are the Trainer's own. Devices and precision come from
`models.device` and `tuning.precision` (`core/devices.py`), `tuning.gradient_checkpointing` and
`tuning.quantize: 4bit` (QLoRA, CUDA + bitsandbytes); the SFT loss skips full-vocabulary logits for
prompt tokens (`tuning/loss.py`).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from datasets import Dataset

from ragtune import __version__
from ragtune.core.adapters import (
    AdapterCard,
    check_base_model,
    model_fingerprint,
    read_card,
    write_base_reference,
    write_card,
)
from ragtune.core.config import Config, TuningConfig
from ragtune.core.devices import PRECISION_DTYPES, check_precision, cuda_available, resolve_device, training_dtype
from ragtune.core.errors import ConfigError, DataError
from ragtune.core.models import load_generator_model, peft_wrapping, resolve_generator
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.callbacks import FormatAdherenceCallback
from ragtune.tuning.cleaning import clean_examples
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
                "val_perplexity": _perplexity(loss),
                "format_adherence": formats.get(epoch),
            }
        )
    return out


def train_adapter(  # noqa: PLR0913 - callers pass these options by keyword
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
    options = _Options(
        epochs=epochs or config.tuning.epochs,
        progress=progress,
        init_adapter=init_adapter,
        corpus=corpus,
        snapshot=snapshot,
        extra_hyperparameters=(extra_card or {}).get("hyperparameters", {}),
        max_steps=max_steps,
    )
    run = _start(name, config, options)
    model, tok, builder = _load_model(config, run.device)
    data = _prepare_data(examples, run, tok, builder)
    run = _resolve_memory(run, model, _longest_row(data))
    if run.device == "cpu" and run.tuning.gradient_checkpointing is True:
        limit_heap_retention()  # where memory is the constraint; micro-batches keep glibc's faster heap
    model = _wrap_model(model, run.tuning, init_adapter)
    hyper = _hyperparameters(run, _peft_targets(model))
    resume = _prepare_resume(run.ckpt_dir, f"{data.data_hash}-{json.dumps(hyper, sort_keys=True, default=str)}")
    callbacks, fmt = _callbacks(config, data, builder)
    trainer = _trainer(run, model, tok, data, callbacks)
    resumed_from = _resume_point(run, resume)
    train_out = trainer.train(resume_from_checkpoint=resumed_from)
    outcome = _measure(trainer, train_out, data, fmt)
    result = TuneResult(
        path=run.out_dir,
        card=_card(run, data, hyper, outcome),
        train_tokens=non_pad_tokens(data.train_rows),
        history=outcome.history,
        resumed_from=Path(resumed_from).name if resumed_from else None,
    )
    if trainer.is_world_process_zero():
        _write(trainer.model, tok if config.tuning.method == "full" else None, result.card, run.out_dir, name)
    return result


@dataclass(frozen=True)
class _Options:
    """`train_adapter`'s per-call options, with the epoch count resolved against the config."""

    epochs: float
    progress: bool
    init_adapter: Path | None
    corpus: list[str] | None
    snapshot: str | None
    extra_hyperparameters: dict[str, Any]
    max_steps: int | None


@dataclass(frozen=True)
class _Run:
    """What every step of one run reads: its name, settings, start time and the base it trains on."""

    name: str
    config: Config
    options: _Options
    started: float
    base_hash: str | None
    parent: AdapterCard | None  # the adapter training continues from
    device: str  # the resolved `models.device` this run trains on
    eval_batch_size: int | None = None  # the configured batch, when micro-batches split it (`_resolve_memory`)

    @property
    def tuning(self) -> TuningConfig:
        return self.config.tuning

    @property
    def out_dir(self) -> Path:
        root = self.config.workspace / "models" if self.tuning.method == "full" else self.config.adapters_dir
        return root / self.name

    @property
    def ckpt_dir(self) -> Path:
        return self.out_dir / "checkpoints"


@dataclass(frozen=True)
class _Data:
    """The run's cleaned, split and encoded rows, with the counts and hash its card records."""

    train_rows: list[dict[str, Any]]
    val_rows: list[dict[str, Any]]
    val_examples: list[Example]  # SFT only: format adherence is measured on a sample of them
    n_test: int
    counts: dict[str, int]
    data_hash: str


@dataclass(frozen=True)
class _Outcome:
    history: list[dict[str, Any]]
    metrics: dict[str, float | None]


def _start(name: str, config: Config, options: _Options) -> _Run:
    """Seed, reject impossible settings and check a parent adapter's base model before any loading."""
    for module in ("peft", "transformers.trainer"):
        importlib.import_module(module)  # before the clock starts: wall_time_s times the run, not imports
    from transformers import set_seed

    started = time.time()
    set_seed(config.tuning.seed)
    if config.tuning.method == "full" and options.init_adapter is not None:
        raise ConfigError("continuing from an adapter needs tuning.method=lora")
    device = check_device_settings(config)
    base_hash = base_model_hash(config)
    parent: AdapterCard | None = None
    if options.init_adapter is not None:
        parent = read_card(options.init_adapter)
        check_base_model(parent, config.models.generator, base_hash)
    return _Run(name, config, options, started, base_hash, parent, device)


QLORA_NEEDS = "tuning.quantize 4bit needs a CUDA GPU and bitsandbytes (pip install bitsandbytes)"


def check_device_settings(config: Config) -> str:
    """The device training runs on; a ConfigError for settings this machine cannot run, before any loading."""
    cfg = config.tuning
    device = resolve_device(config.models.device)
    check_precision(cfg.precision, device)
    if cfg.quantize == "4bit":
        if cfg.method == "full":
            raise ConfigError("tuning.quantize 4bit (QLoRA) trains LoRA adapters: set tuning.method lora")
        if device != "cuda" or not cuda_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError(QLORA_NEEDS)
    return device


# glibc's M_MMAP_THRESHOLD: allocations from this size up are mmap'ed and given back on free
_M_MMAP_THRESHOLD = -3
HEAP_MMAP_THRESHOLD = 1 << 20


def limit_heap_retention(threshold: int = HEAP_MMAP_THRESHOLD) -> bool:
    """Make glibc return freed tensor memory to the OS at once (True when set; False off glibc).

    PyTorch's CPU tensors come from malloc. glibc serves large blocks with mmap, but after the first
    such block is freed it raises its mmap threshold to that block's size (up to 32 MB), so from then
    on every activation of a batch (7-19 MB at 8 x 384 tokens) lands on the heap, where checkpointed
    layer inputs kept between freed temporaries pin it: measured on SmolLM2-135M, a checkpointed
    forward grew the RSS by 4.1 GB while autograd held 0.35 GB. A fixed threshold (which also turns
    the adjustment off) puts blocks from 1 MB up in their own mappings, so RSS follows live tensors.
    Process-wide and kept after training; smaller allocations are untouched. Fresh mappings are
    faulted in page by page, so a step costs more (a checkpointed step of 8 x 384 tokens: 61-81 s
    instead of 39-40 s on a loaded 2-core machine): `train_adapter` sets it only for checkpointed runs.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold))


# activation bytes a step keeps per token, decoder layer and hidden unit without checkpointing
# (SmolLM2-135M with LoRA on every projection, 8 x 384 tokens: 6.5 GB over the loaded model)
ACTIVATION_BYTES = 120
ACTIVATIONS_BUDGET_BYTES = 1 << 30


def activation_bytes(model_config: Any, batch_size: int, max_length: int) -> int:
    """Estimated activation memory of one full-length micro-batch without gradient checkpointing."""
    layers = getattr(model_config, "num_hidden_layers", None) or getattr(model_config, "n_layer", 0) or 0
    hidden = getattr(model_config, "hidden_size", None) or getattr(model_config, "n_embd", 0) or 0
    return int(batch_size * max_length * layers * hidden * ACTIVATION_BYTES)


@dataclass(frozen=True)
class MemoryPlan:
    """How a step's batch runs: `micro_batch` rows at a time, `grad_accum` micro-batches per optimizer
    step (micro_batch x grad_accum = tuning.batch_size x tuning.grad_accum), with or without checkpointing."""

    micro_batch: int
    grad_accum: int
    checkpointing: bool


def activations_budget(device: str) -> int:
    """Activation memory a micro-batch may keep: 1 GB in host memory (CPU, MPS); on a CUDA GPU a third of
    its free memory, so a GPU keeps large micro-batches (small ones leave it idle)."""
    if device.startswith("cuda") and cuda_available():
        import torch

        free, _total = torch.cuda.mem_get_info()
        return max(ACTIVATIONS_BUDGET_BYTES, int(free) // 3)
    return ACTIVATIONS_BUDGET_BYTES


def memory_plan(
    cfg: TuningConfig, model_config: Any, longest: int | None = None, budget: int = ACTIVATIONS_BUDGET_BYTES
) -> MemoryPlan:
    """`tuning.gradient_checkpointing` resolved. auto keeps a micro-batch of the longest rows (`longest`
    tokens, at most `tuning.max_length`) within `budget` of activations (`activations_budget`: 1 GB in
    host memory) by splitting the batch into micro-batches with gradient accumulation (the same
    optimizer steps: the answer-token loss is summed over the whole batch, `tuning/loss.py`), and turns
    checkpointing on only when one row alone is over.

    Why splitting first: recomputing activations costs a third more compute, and on the CPU
    checkpointing also needs glibc's heap held back (`limit_heap_retention`, page faults on every
    activation). Measured on the sample's ft-100 rows (8 x 245 tokens, 4 steps, 2 cores): checkpointed
    110 s and 1.45 GB peak RSS, micro-batches of 2 x 4 51 s and 2.54 GB, of 4 x 2 43 s but 3.64 GB."""
    configured = MemoryPlan(cfg.batch_size, cfg.grad_accum, cfg.gradient_checkpointing is True)
    if cfg.gradient_checkpointing != "auto":
        return configured
    length = min(longest, cfg.max_length) if longest else cfg.max_length
    for micro in range(cfg.batch_size, 0, -1):
        if cfg.batch_size % micro == 0 and activation_bytes(model_config, micro, length) <= budget:
            return MemoryPlan(micro, cfg.grad_accum * (cfg.batch_size // micro), False)
    return MemoryPlan(cfg.batch_size, cfg.grad_accum, True)


def _longest_row(data: _Data) -> int:
    return max((len(r["input_ids"]) for r in data.train_rows), default=0)


def _resolve_memory(run: _Run, model: Any, longest: int | None = None) -> _Run:
    """The run with its memory plan applied: `tuning.gradient_checkpointing` as a bool, `batch_size` and
    `grad_accum` as the micro-batch and accumulation that run (its card and resume fingerprint record them)."""
    plan = memory_plan(run.tuning, getattr(model, "config", None), longest, activations_budget(run.device))
    update = {
        "gradient_checkpointing": plan.checkpointing,
        "batch_size": plan.micro_batch,
        "grad_accum": plan.grad_accum,
    }
    tuning = run.tuning.model_copy(update=update)
    config = run.config.model_copy(update={"tuning": tuning})
    return dataclasses.replace(run, config=config, eval_batch_size=run.tuning.batch_size)


def _local_device(device: str) -> str:
    """This process's GPU under `torchrun`/`accelerate launch` (LOCAL_RANK), else the device itself."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if device == "cuda" else device


def _quantization(cfg: TuningConfig) -> Any:
    """bitsandbytes 4-bit NF4 weights (QLoRA) computing in the training precision; None unless asked."""
    if cfg.quantize != "4bit":
        return None
    from transformers import BitsAndBytesConfig

    compute = PRECISION_DTYPES[cfg.precision]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=True,
    )


def _load_model(config: Config, device: str) -> tuple[Any, Any, PromptBuilder]:
    cfg = config.tuning
    model, tok = load_generator_model(
        config.models.generator,
        config.models.cache_dir,
        device=_local_device(device),
        dtype=training_dtype(cfg.precision, device, cfg.method),
        quantization_config=_quantization(cfg),
    )
    tok.padding_side = "right"
    return model, tok, PromptBuilder(tok, config.prompt.system_prompt)


def _prepare_data(examples: list[Example], run: _Run, tok: Any, builder: PromptBuilder) -> _Data:
    if run.tuning.objective == "causal-lm":
        data = _corpus_data(run.options.corpus or [], run.tuning, tok)
    else:
        data = _sft_data(examples, run.tuning, builder, run.options.progress)
    if not data.train_rows:
        raise DataError(f"no training example fits in tuning.max_length={run.tuning.max_length} tokens")
    data.counts["train_rows"], data.counts["val_rows"] = len(data.train_rows), len(data.val_rows)
    return data


def _corpus_data(corpus: list[str], cfg: TuningConfig, tok: Any) -> _Data:
    """Causal-lm rows: each non-blank text is its own group, split into train and validation only."""
    texts = [t for t in corpus if t.strip()]
    if not texts:
        raise DataError("--objective causal-lm needs corpus text: ingest documents into the index first")
    grouped = [Example(question="", answer=t, group=f"t{i}") for i, t in enumerate(texts)]
    split = split_groups(grouped, cfg.val_fraction, 0.0, cfg.seed)
    return _Data(
        train_rows=encode_corpus([e.answer for e in split.train], tok, cfg.max_length),
        val_rows=encode_corpus([e.answer for e in split.val], tok, cfg.max_length),
        val_examples=[],
        n_test=len(split.test),
        counts={"texts": len(texts), "train_texts": len(split.train), "val_texts": len(split.val)},
        data_hash=data_hash(grouped),
    )


def _sft_data(examples: list[Example], cfg: TuningConfig, builder: PromptBuilder, progress: bool) -> _Data:
    """SFT rows: cleaned, split by group, encoded with the answer tokens as the only labels."""
    if not examples:
        raise DataError("no training examples")
    kept, report = clean_examples(examples, cfg.near_duplicates)
    if not kept:
        raise DataError("no training example left after cleaning: " + "; ".join(report.lines()))
    split = split_groups(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    apart = cfg.independent_chunks
    train_rows, _ = encode_examples(
        split.train,
        builder,
        cfg.max_length,
        cfg.context_dropout,
        cfg.seed,
        cfg.overlong,
        report,
        independent_chunks=apart,
    )
    val_rows, _ = encode_examples(
        split.val, builder, cfg.max_length, cfg.context_dropout, cfg.seed + 1, cfg.overlong, independent_chunks=apart
    )
    _say(progress, *report.lines(), f"split by group: {split.counts()}")
    return _Data(
        train_rows=train_rows,
        val_rows=val_rows,
        val_examples=split.val,
        n_test=len(split.test),
        counts={"loaded": len(examples), **report.as_dict(), **{f"split_{k}": v for k, v in split.counts().items()}},
        data_hash=data_hash(examples),
    )


def _wrap_model(model: Any, cfg: TuningConfig, init_adapter: Path | None) -> Any:
    """Full fine-tuning trains the model itself; LoRA continues `init_adapter` or starts a new adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "full":
        model.train()
        return model
    if cfg.quantize == "4bit":
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.gradient_checkpointing is True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing is True:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still see an input that needs grad
    if init_adapter is not None:
        with peft_wrapping():
            return PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        task_type="CAUSAL_LM",
        target_modules=target_modules(model.config.model_type, cfg.target_modules),
    )
    with peft_wrapping():
        return get_peft_model(model, lora)


def _peft_targets(model: Any) -> list[str]:
    """The modules the adapter wraps (a continued adapter keeps its parent's); none for full tuning."""
    return sorted(getattr(getattr(model, "peft_config", {}).get("default"), "target_modules", None) or [])


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _hyperparameters(run: _Run, modules: list[str]) -> dict[str, Any]:
    """The card's settings; with the data hash they also decide whether a checkpoint may be resumed."""
    cfg, options = run.tuning, run.options
    return {
        "method": cfg.method,
        "objective": cfg.objective,
        "epochs": options.epochs,
        "max_steps": options.max_steps,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler": cfg.lr_scheduler,
        "warmup_ratio": cfg.warmup_ratio,
        "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "world_size": _world_size(),
        "lora_r": cfg.lora_r,
        "lora_alpha": cfg.lora_alpha,
        "lora_dropout": cfg.lora_dropout,
        "target_modules": modules,
        "max_length": cfg.max_length,
        "overlong": cfg.overlong,
        "context_dropout": cfg.context_dropout,
        "early_stopping_patience": cfg.early_stopping_patience,
        "precision": cfg.precision,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "independent_chunks": cfg.independent_chunks,
        "kv_reuse_recompute": run.config.generation.kv_reuse_recompute if cfg.independent_chunks else None,
        "quantize": cfg.quantize,
        "seed": cfg.seed,
        "system_prompt": run.config.prompt.system_prompt,
        **options.extra_hyperparameters,
    }


def _training_args(run: _Run, has_val: bool) -> Any:
    """Epoch-wise evaluation and checkpoints (the best one kept when there is validation data), on the
    resolved device in `tuning.precision`; DDP over gloo on CPUs, the default (NCCL) on GPUs."""
    from transformers import TrainingArguments

    cfg, options = run.tuning, run.options
    on = cfg.gradient_checkpointing is True  # resolved from auto by then (`_resolve_memory`)
    checkpointing = {"use_reentrant": False} if on else None
    return TrainingArguments(
        output_dir=str(run.ckpt_dir),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of all steps
        weight_decay=cfg.weight_decay,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=run.eval_batch_size or cfg.batch_size,  # no activations kept: the whole batch
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
        use_cpu=run.device == "cpu",
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        activation_checkpointing=on,  # transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs=checkpointing,
        ddp_backend="gloo" if _world_size() > 1 and run.device == "cpu" else None,
        disable_tqdm=not options.progress,
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def _callbacks(config: Config, data: _Data, builder: PromptBuilder) -> tuple[list[Any], FormatAdherenceCallback | None]:
    """Early stopping and format adherence, both only with validation data; the latter for SFT only."""
    from transformers import EarlyStoppingCallback

    cfg = config.tuning
    callbacks: list[Any] = []
    if not data.val_rows:
        return callbacks, None
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    if cfg.format_sample <= 0 or cfg.objective != "sft" or not data.val_examples:
        return callbacks, None
    fmt = FormatAdherenceCallback(
        builder,
        data.val_examples[: cfg.format_sample],
        config.eval.format_regex,
        config.eval.format_schema,
        cfg.format_max_new_tokens,
    )
    callbacks.append(fmt)
    return callbacks, fmt


def _trainer(run: _Run, model: Any, tok: Any, data: _Data, callbacks: list[Any]) -> Any:
    from transformers import DataCollatorForSeq2Seq

    from ragtune.tuning.chunk_attention import ChunkAttentionCollator
    from ragtune.tuning.loss import AnswerLossTrainer

    has_val = bool(data.val_rows)
    return AnswerLossTrainer(
        model=model,
        args=_training_args(run, has_val),
        train_dataset=Dataset.from_list(data.train_rows),
        eval_dataset=Dataset.from_list(data.val_rows) if has_val else None,
        data_collator=ChunkAttentionCollator(tok, recompute=run.config.generation.kv_reuse_recompute)
        if run.tuning.independent_chunks
        else DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
        callbacks=callbacks,
    )


def _resume_point(run: _Run, resume: bool) -> str | None:
    resumed_from = _last_checkpoint(run.ckpt_dir) if resume else None
    if resumed_from:
        _say(run.options.progress, f"resuming from {resumed_from}")
    return resumed_from


def _perplexity(loss: float | None) -> float | None:
    return math.exp(loss) if loss is not None and loss < 50 else None


def _measure(trainer: Any, train_out: Any, data: _Data, fmt: FormatAdherenceCallback | None) -> _Outcome:
    """Per-epoch history from the training log, then a final evaluation of the kept (best) model."""
    history = _history(trainer.state.log_history, fmt.by_epoch if fmt else {})  # before evaluate() logs again
    val_loss = float(trainer.evaluate()["eval_loss"]) if data.val_rows else None
    best = min(history, key=lambda h: h["val_loss"]) if history else {}
    step_losses = [float(e["loss"]) for e in trainer.state.log_history if "loss" in e]
    epochs_run = float(trainer.state.epoch or 0)
    metrics = {
        "train_loss": float(train_out.training_loss),
        "val_loss": val_loss,
        "val_perplexity": _perplexity(val_loss),
        "format_adherence": best.get("format_adherence"),
        "best_epoch": best.get("epoch"),
        "epochs_run": epochs_run,
        "train_tokens": float(non_pad_tokens(data.train_rows) * (trainer.state.epoch or 0)),
        "train_runtime_s": float(train_out.metrics.get("train_runtime", 0.0)),
        "first_step_loss": step_losses[0] if step_losses else None,
        "last_step_loss": step_losses[-1] if step_losses else None,
    }
    return _Outcome(history=history, metrics=metrics)


def _card(run: _Run, data: _Data, hyper: dict[str, Any], outcome: _Outcome) -> AdapterCard:
    return AdapterCard(
        name=run.name,
        kind="full" if run.tuning.method == "full" else "lora",
        base_model=run.config.models.generator,
        base_model_hash=run.base_hash,
        data_hash=data.data_hash,
        n_train=len(data.train_rows),
        n_val=len(data.val_rows),
        n_test=data.n_test,
        data_counts=data.counts,
        hyperparameters=hyper,
        metrics=outcome.metrics,
        history=outcome.history,
        snapshot=run.options.snapshot,
        parent_adapter=run.parent.name if run.parent else None,
        ragtune_version=__version__,
        wall_time_s=round(time.time() - run.started, 1),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _write(model: Any, tokenizer: Any, card: AdapterCard, out_dir: Path, name: str) -> None:
    """Save to a temporary folder, then swap it in: a crash never leaves a half-written adapter."""
    tmp = out_dir.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    write_base_reference(tmp, card.base_model)  # loads in vLLM unchanged: no local cache path
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp))
    write_card(tmp, card)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)

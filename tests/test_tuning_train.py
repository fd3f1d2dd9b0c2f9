"""Training runs on the real bundled model: resume after a kill, a 2-process DDP run, merge equal to
adapter+base, continuing an adapter, causal-lm on corpus text, full fine-tuning, per-architecture
LoRA targets, and the base-model mismatch error. Every run is a few steps on a dozen short rows."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from net import free_port

from ragtune.core.adapters import read_card, write_card
from ragtune.core.config import Config, load_config
from ragtune.core.errors import DataError
from ragtune.core.models import load_generator_model, load_tokenizer
from ragtune.core.prompt import PromptBuilder
from ragtune.tuning.data import Example
from ragtune.tuning.merge import merge_adapter
from ragtune.tuning.trainer import target_modules, train_adapter

# trains or loads the language model (in process or in a subprocess): not in `make test-fast`
pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
FAST = {
    "batch_size": 4,
    "learning_rate": 3e-3,
    "lora_r": 4,
    "lora_alpha": 8,
    "max_length": 160,
    "val_fraction": 0.25,
    "format_sample": 0,
    "early_stopping_patience": 0,
    "context_dropout": 0.0,
}


def _examples(n: int = 12) -> list[Example]:
    return [
        Example(
            question=f"How long does the lamp battery last in mode {m}?",
            answer=f"In mode {m} it lasts 31 hours.\nSources: Zorblat Battery",
            group=f"g{m % 4}",
        )
        for m in range(n)
    ]


def _config(ws: Path, **tuning: Any) -> Config:
    return load_config(workspace=ws, environ={}, overrides={"tuning": {**FAST, **tuning}})


def _write_inputs(tmp_path: Path, tuning: dict[str, Any]) -> tuple[Path, Path]:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(e.model_dump_json() + "\n" for e in _examples()))
    overrides = tmp_path / "overrides.json"
    overrides.write_text(json.dumps({"tuning": {**FAST, **tuning}}))
    return data, overrides


CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ragtune.core.config import load_config
    from ragtune.tuning.data import load_examples
    from ragtune.tuning.trainer import train_adapter

    data, overrides, ws, name, hang_marker = sys.argv[1:6]
    if hang_marker != "-":  # hang right after the first checkpoint is fully written, so the parent can kill us
        from transformers import Trainer

        original = Trainer._save_checkpoint

        def save_then_hang(self, *args, **kwargs):
            original(self, *args, **kwargs)
            Path(hang_marker).write_text("saved")
            time.sleep(600)

        Trainer._save_checkpoint = save_then_hang
    cfg = load_config(workspace=ws, environ={}, overrides=json.loads(Path(overrides).read_text()))
    max_steps = int(os.environ.get("TEST_MAX_STEPS", "0")) or None
    train_adapter(load_examples(Path(data)), name, cfg, progress=False, max_steps=max_steps)
    """
)


def _child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_resume_after_kill(tmp_path: Path):
    tuning = {"epochs": 2}
    data, overrides = _write_inputs(tmp_path, tuning)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    marker = tmp_path / "saved"
    ws = tmp_path / "ws"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(data), str(overrides), str(ws), "res", str(marker)],
        env=_child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 600
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    ckpt = ws / "adapters" / "res" / "checkpoints"
    assert [p.name for p in ckpt.glob("checkpoint-*")] and not (ws / "adapters" / "res" / "adapter_card.json").exists()

    result = train_adapter(_examples(), "res", _config(ws, **tuning), progress=False)
    assert result.resumed_from is not None and result.resumed_from.startswith("checkpoint-")
    card = read_card(result.path)
    assert card.metrics["epochs_run"] == pytest.approx(2.0)
    assert [h["epoch"] for h in card.history] == [1, 2]  # the killed run's epoch-1 evaluation survived
    assert not ckpt.exists() and (result.path / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_two_process_ddp_writes_one_adapter_and_loss_goes_down(tmp_path: Path):
    data, overrides = _write_inputs(tmp_path, {"epochs": 1})
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
    cmd += [str(script), str(data), str(overrides), str(ws), "ddp", "-"]
    r = subprocess.run(cmd, env={**_child_env(), "TEST_MAX_STEPS": "5"}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    written = sorted(p.name for p in (ws / "adapters").iterdir())
    assert written == ["ddp"]
    card = read_card(ws / "adapters" / "ddp")
    assert card.hyperparameters["world_size"] == 2
    first, last = card.metrics["first_step_loss"], card.metrics["last_step_loss"]
    assert first is not None and last is not None and last < first


def _greedy(model: Any, tok: Any, prompts: list[str]) -> list[list[int]]:
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt", add_special_tokens=False)
            gen = model.generate(**ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
            out.append(gen[0, ids["input_ids"].shape[1] :].tolist())
    return out


@pytest.mark.slow  # a merge and two generations (CI runs it; the local `make test` leaves it out)
def test_merge_gives_the_same_greedy_output_as_adapter_plus_base(tmp_path: Path, tiny_adapter: Path):
    from peft import PeftModel

    cfg = load_config(workspace=tmp_path / "ws", environ={})
    shutil.copytree(tiny_adapter, cfg.adapters_dir / "tiny")
    merged = merge_adapter(cfg, "tiny")
    assert merged == cfg.workspace / "models" / "tiny-merged"
    card = read_card(merged)
    assert card.kind == "merged" and card.parent_adapter == "tiny"

    base, tok = load_generator_model(cfg.models.generator)
    with_adapter = PeftModel.from_pretrained(base, str(tiny_adapter)).eval()
    builder = PromptBuilder(tok, cfg.prompt.system_prompt)
    prompts = [builder.prompt("How long does a Zorblat lamp battery last?"), builder.prompt("What colour is it?")]
    expected = _greedy(with_adapter, tok, prompts)
    merged_model, merged_tok = load_generator_model(str(merged))  # what serving loads as models.generator
    assert _greedy(merged_model, merged_tok, prompts) == expected


def _foreign(adapter: Path, dest: Path) -> Path:
    shutil.copytree(adapter, dest)
    write_card(dest, read_card(dest).model_copy(update={"base_model": "someone/other-model"}))
    return dest


@pytest.mark.slow
def test_continue_from_adapter_and_base_model_mismatch(tmp_path: Path, tiny_adapter: Path):
    cfg = _config(tmp_path / "ws")
    shutil.copytree(tiny_adapter, cfg.adapters_dir / "tiny")
    parent = cfg.adapters_dir / "tiny"
    result = train_adapter(_examples(8), "tiny2", cfg, progress=False, init_adapter=parent, max_steps=2)
    card = read_card(result.path)
    assert card.parent_adapter == "tiny" and card.n_train > 0
    assert (
        json.loads((result.path / "adapter_config.json").read_text())["r"]
        == json.loads((tiny_adapter / "adapter_config.json").read_text())["r"]
    )  # the parent's LoRA shape, not the config's lora_r=4

    other = _foreign(tiny_adapter, cfg.adapters_dir / "other")
    with pytest.raises(DataError, match="trained on base model 'someone/other-model'"):
        train_adapter(_examples(8), "x", cfg, progress=False, init_adapter=other, max_steps=1)
    with pytest.raises(DataError, match="trained on base model"):
        merge_adapter(cfg, "other")


def test_causal_lm_on_corpus_text(tmp_path: Path, fact_docs):
    cfg = _config(tmp_path / "ws", objective="causal-lm", val_fraction=0.0)
    with pytest.raises(DataError, match="corpus text"):
        train_adapter([], "dapt", cfg, progress=False, corpus=[" "])
    corpus = [f"{d.title}\n{d.text}" for d in fact_docs]
    result = train_adapter([], "dapt", cfg, progress=False, corpus=corpus, snapshot="s00001-test", max_steps=2)
    card = read_card(result.path)
    assert card.hyperparameters["objective"] == "causal-lm" and card.data_counts["texts"] == 4
    assert card.snapshot == "s00001-test" and card.metrics["first_step_loss"] is not None


def _tiny_model_dir(tmp_path: Path, kind: str) -> Path:
    """A randomly initialised 1-layer model of a real architecture, with the bundled tokenizer."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    tok = load_tokenizer("bundled:smollm2-135m-instruct")
    common = {"vocab_size": len(tok), "num_hidden_layers": 1, "num_attention_heads": 2}
    config = {
        "llama": lambda: LlamaConfig(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
        "qwen2": lambda: Qwen2Config(hidden_size=32, intermediate_size=64, num_key_value_heads=2, **common),
        "gpt2": lambda: GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=len(tok)),
    }[kind]()
    folder = tmp_path / f"tiny-{kind}"
    AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_lora_targets_fit_each_architecture(tmp_path: Path, arch: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(_tiny_model_dir(tmp_path, arch)))
    targets = target_modules(model.config.model_type, None)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets, task_type="CAUSAL_LM"))
    wrapped = {name.split(".")[-1] for name, mod in peft_model.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == set(targets)


def test_full_fine_tuning_writes_a_plain_model(tmp_path: Path):
    folder = _tiny_model_dir(tmp_path, "llama")
    cfg = load_config(
        workspace=tmp_path / "ws",
        environ={},
        overrides={"models": {"generator": str(folder)}, "tuning": {**FAST, "method": "full", "learning_rate": 1e-3}},
    )
    result = train_adapter(_examples(8), "full", cfg, progress=False, max_steps=2)
    assert result.path == cfg.workspace / "models" / "full"
    card = read_card(result.path)
    assert card.kind == "full" and card.base_model == str(folder) and card.base_model_hash
    model, _ = load_generator_model(str(result.path))
    before, _ = load_generator_model(str(folder))
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, before.model.layers[0].mlp.up_proj.weight)

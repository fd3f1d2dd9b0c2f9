"""Does the verdict get right what is right by construction?

Four cases, on small generated documents (vaults, each with a long multi-fact paragraph and an
access code) and the bundled sample domain:

1. noise labels: yes/no questions whose labels are a seeded shuffle, unrelated to the documents or
   the questions. Nothing can beat "always yes" beyond chance, so the real verdict, end to end,
   must end with "no setup beats the baselines" (choice "none").
2. retrieval helps: "What is the access code of Vault X?" on documents the base model cannot know;
   the code sits in a long sentence, so the extractive baseline scores low while a generator that
   reads the retrieved text and answers with the code scores high. The real verdict, end to end,
   must recommend a retrieval arm (rag, hybrid or hybrid-raft).
3. a cheaper arm that is clearly worse: from case 2's real per-question scores (answers.jsonl), the
   recommended arm is copied as a 4x faster arm that loses a few of its right answers (about 2.5x
   the margin in mean, too few questions for a significant difference). `recommend()` on the
   figures computed from those scores must not pick it ("not significant" is not "no worse").
4. the seed spread of ft on the sample domain: the verdict's own trainer with 3 seeds, ft scored on
   the same questions with each adapter; the figure is max - min token F1.

Prints one JSON object on the last stdout line. `--quick` uses fewer questions and training rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
RETRIEVAL_ARMS = {"rag", "hybrid", "hybrid-raft"}
NAMES = [
    "Kestrel",
    "Heron",
    "Plover",
    "Osprey",
    "Wren",
    "Lapwing",
    "Curlew",
    "Dunlin",
    "Merlin",
    "Shrike",
    "Siskin",
    "Twite",
    "Bittern",
    "Avocet",
    "Godwit",
    "Linnet",
    "Redpoll",
    "Stonechat",
    "Whinchat",
    "Wheatear",
    "Dipper",
    "Goshawk",
    "Harrier",
    "Hobby",
    "Nightjar",
    "Oriole",
    "Pipit",
    "Quail",
    "Rail",
    "Ruff",
    "Sanderling",
    "Skua",
    "Smew",
    "Snipe",
    "Stint",
    "Swift",
    "Teal",
    "Tern",
    "Turnstone",
    "Warbler",
    "Wigeon",
    "Woodcock",
    "Yellowhammer",
    "Bunting",
    "Chiffchaff",
    "Crossbill",
    "Fieldfare",
    "Firecrest",
    "Gadwall",
    "Garganey",
    "Grebe",
    "Hawfinch",
]
COLOURS = ["mauve", "ochre", "slate", "teal", "umber", "saffron", "cobalt", "russet"]
GUILDS = ["Brindle", "Cask", "Fennel", "Marrow", "Quill", "Tansy"]


def _vaults(n: int, seed: int) -> list[dict[str, Any]]:
    """n invented vaults; each access code sits inside a long sentence among other facts."""
    rng = random.Random(seed)
    out = []
    for name in NAMES[:n]:
        code = f"{rng.randint(1000, 9999)}-{rng.choice('BCDFGHJKLMNPQRSTVWXZ')}{rng.choice('BCDFGHJKLMNPQRSTVWXZ')}"
        floor, colour, guild = rng.randint(1, 9), rng.choice(COLOURS), rng.choice(GUILDS)
        text = (
            f"Vault {name} sits on floor {floor} of the east annex, between the map room and the {colour} stairwell, "
            f"and it holds the ledgers of the {guild} guild. Its heavy oak door, which faces the courtyard and was "
            f"restored by the carpenters of the {guild} guild last autumn, opens only with the access code {code} "
            f"entered twice on the brass keypad. The keeper of Vault {name} checks the humidity every {floor + 2} days "
            "and writes the reading in the visitors' book by the door."
        )
        out.append({"id": f"vault-{name.lower()}", "title": f"Vault {name}", "text": text, "code": code, "name": name})
    return out


def _config(ws: Path, system_prompt: str, max_new_tokens: int, seeds: int = 1) -> Any:
    from ragtune.core.config import load_config

    return load_config(
        workspace=ws,
        environ={},
        overrides={
            "prompt": {"system_prompt": system_prompt},
            "generation": {"max_new_tokens": max_new_tokens},
            "tuning": {
                "epochs": 1,
                "batch_size": 4,
                "learning_rate": 2e-3,
                "val_fraction": 0.0,
                "format_sample": 0,
                "early_stopping_patience": 0,
            },
            "eval": {"format_regex": None, "latency_samples": 2},
            "verdict": {
                "few_shot_k": 0,
                "curve_fractions": [1.0],
                "raft": False,
                "eval_limit": None,
                "seeds": seeds,
            },
        },
    )


def _verdict(ws: Path, data: Any, system_prompt: str, max_new_tokens: int) -> dict[str, Any]:
    from rich.console import Console

    from ragtune.eval.verdict.run import run_verdict

    config = _config(ws / "ws", system_prompt, max_new_tokens)
    t0 = time.perf_counter()
    paths = run_verdict(config, data, ws / "verdict", Console(stderr=True))
    verdict = json.loads(paths["json"].read_text())
    arms = {a["arm"]: round(a["quality"]["mean"], 3) for a in verdict["figures"]["arms"]}
    return {
        "choice": verdict["recommendation"]["choice"],
        "first_sentence": verdict["recommendation"]["sentences"][0],
        "token_f1": arms,
        "seconds": round(time.perf_counter() - t0, 1),
        "answers": str(paths["answers"]),
        "report": str(paths["md"]),
    }


def _split(vaults: list[dict[str, Any]], n_eval: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return vaults[:n_eval], vaults[n_eval:]


def case_noise(out: Path, n_eval: int, n_train: int, seed: int) -> dict[str, Any]:
    """Yes/no questions with shuffled labels (about 60% yes), unrelated to the documents."""
    from ragtune.core.types import Document
    from ragtune.eval.harness.data import EvalItem
    from ragtune.eval.verdict.inputs import VerdictData
    from ragtune.tuning.data import Example

    vaults = _vaults(n_eval + n_train, seed)
    rng = random.Random(seed + 1)

    def labels(n: int) -> list[str]:
        lab = ["yes"] * round(0.6 * n) + ["no"] * (n - round(0.6 * n))
        rng.shuffle(lab)
        return lab

    test, train = _split(vaults, n_eval)
    q = "Is the door of Vault {} made of oak and restored last autumn?"
    items = [
        EvalItem(id=v["id"], question=q.format(v["name"]), answers=[lab])
        for v, lab in zip(test, labels(len(test)), strict=True)
    ]
    examples = [
        Example(question=q.format(v["name"]), answer=lab) for v, lab in zip(train, labels(len(train)), strict=True)
    ]
    docs = [Document(id=v["id"], title=v["title"], text=v["text"]) for v in vaults]
    data = VerdictData(items=items, examples=examples, docs=docs, sources={"case": "noise labels"})
    return _verdict(out / "noise", data, "Answer the question with yes or no.", 6)


def case_retrieval(out: Path, n_eval: int, n_train: int, seed: int) -> dict[str, Any]:
    """Access codes: only retrieval knows them, and they sit inside long sentences."""
    from ragtune.core.types import Document
    from ragtune.eval.harness.data import EvalItem
    from ragtune.eval.verdict.inputs import VerdictData
    from ragtune.tuning.data import Example

    vaults = _vaults(n_eval + n_train, seed + 7)
    test, train = _split(vaults, n_eval)
    q = "What is the access code of Vault {}?"
    items = [EvalItem(id=v["id"], question=q.format(v["name"]), answers=[v["code"]], doc_ids=[v["id"]]) for v in test]
    examples = [
        Example(
            question=q.format(v["name"]),
            answer=v["code"],
            context=[{"title": v["title"], "text": v["text"]}],
            doc_id=v["id"],
        )
        for v in train
    ]
    docs = [Document(id=v["id"], title=v["title"], text=v["text"]) for v in vaults]
    data = VerdictData(items=items, examples=examples, docs=docs, sources={"case": "retrieval helps"})
    return _verdict(out / "retrieval", data, "Answer with the access code only, nothing else.", 12)


def case_cheaper_worse(retrieval: dict[str, Any], alpha: float = 0.05) -> dict[str, Any]:
    """recommend() on figures from case 2's real per-question scores plus a faster, clearly worse copy."""
    from ragtune.eval.harness.arms import ArmSpec
    from ragtune.eval.harness.runner import Record
    from ragtune.eval.verdict.compare import arm_figures, comparisons
    from ragtune.eval.verdict.recommend import VerdictFigures, recommend

    rows = [json.loads(line) for line in Path(retrieval["answers"]).read_text().splitlines()]
    best = retrieval["choice"] if retrieval["choice"] != "none" else "rag"
    records = [
        Record(
            id=r["id"],
            arm=arm,
            question=r["question"],
            answer=a["answer"],
            extracted=a["extracted"],
            golds=r["golds"],
            exact_match=0.0,
            f1=a["f1"],
            contains=0.0,
            format_ok=None,
            total_ms=1000.0,
        )
        for r in rows
        for arm, a in r["answers"].items()
    ]
    right = [r for r in records if r.arm == best and r.f1 > 0.5]
    lost = {r.id for r in right[:: max(1, len(right) // 3)][:3]}  # three of its right answers, spread out
    cheap = [
        r.model_copy(update={"arm": "cheap", "f1": 0.0 if r.id in lost else r.f1, "total_ms": 250.0})
        for r in records
        if r.arm == best
    ]
    specs = {"constant": ArmSpec(name="constant", mode="base", baseline="constant")}
    specs["extractive"] = ArmSpec(name="extractive", mode="rag", baseline="extractive")
    all_records = records + cheap
    figs = VerdictFigures(
        arms=arm_figures(all_records, specs, seed=0),
        comparisons=comparisons(all_records, "token F1", seed=0, alpha=alpha),
    )
    rec = recommend(figs)
    c = figs.comparison("cheap", best, "token F1")
    return {
        "best": best,
        "cheap_minus_best": None if c is None else round(c.diff, 3),
        "interval": None if c is None else [round(c.lo or 0.0, 3), round(c.hi or 0.0, 3)],
        "significant": None if c is None else c.significant,
        "margin": figs.effective_margin,
        "choice": rec.choice,
    }


def case_seeds(out: Path, n_eval: int, n_train: int, seeds: int = 3) -> dict[str, Any]:
    """ft on the sample domain trained with `seeds` seeds by the verdict's trainer, on the same questions."""
    from rich.console import Console

    from ragtune.core.config import HOUSE_STYLE_SYSTEM_PROMPT
    from ragtune.core.sample import sample_path
    from ragtune.eval.harness.arms import ArmSpec
    from ragtune.eval.harness.data import evenly_spaced, load_items
    from ragtune.eval.harness.runner import RunSettings, Scoring, run_arms
    from ragtune.eval.verdict.compare import arm_figures
    from ragtune.eval.verdict.learning_curve import nested_subsets
    from ragtune.eval.verdict.run import _Trainer, train_seeds
    from ragtune.eval.verdict.seeds import seed_arm
    from ragtune.serving.pipeline import Pipeline
    from ragtune.tuning.data import load_examples

    config = _config(out / "seeds" / "ws", HOUSE_STYLE_SYSTEM_PROMPT, 24, seeds=seeds)
    examples = nested_subsets(load_examples(sample_path("train.jsonl")), [1.0], 0)[1.0][:n_train]
    items = evenly_spaced(load_items(sample_path("eval.jsonl")), n_eval)
    t0 = time.perf_counter()
    adapters, _ = train_seeds(_Trainer(config, Console(stderr=True)), {1.0: examples}, config)
    arms = [
        ArmSpec(name=seed_arm("ft", i, config.tuning.seed), mode="ft", adapter=a) for i, a in enumerate(adapters[1.0])
    ]
    pipeline = Pipeline.from_config(config, with_index=False)
    records = run_arms(pipeline, items, arms, config, RunSettings(scoring=Scoring.from_config(config), progress=False))
    ft = arm_figures(records, {}, seed=0)[0]
    return {
        "seeds": [config.tuning.seed + i for i in range(seeds)],
        "token_f1_per_seed": [round(s, 3) for s in ft.seeds],
        "spread": None if ft.spread is None else round(ft.spread, 3),
        "mean": round(ft.quality.mean, 3),
        "questions": len(items),
        "train_examples": len(examples),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _target(name: str, value: float, target: float, op: str = ">=") -> dict[str, Any]:
    met = value >= target if op == ">=" else value <= target
    return {"name": name, "value": value, "target": target, "op": op, "met": met}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer questions and training rows (same code paths)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out" / "verdict_sanity")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n_eval, n_train = (24, 16) if args.quick else (32, 24)
    t0 = time.perf_counter()
    noise = case_noise(args.out, n_eval, n_train, args.seed)
    retrieval = case_retrieval(args.out, n_eval, n_train, args.seed)
    cheap = case_cheaper_worse(retrieval)
    seeds = case_seeds(args.out, 16 if args.quick else 24, n_train)
    targets = [
        _target("noise labels: the verdict says no setup beats the baselines", float(noise["choice"] == "none"), 1.0),
        _target(
            "retrieval helps: the verdict recommends a retrieval arm",
            float(retrieval["choice"] in RETRIEVAL_ARMS),
            1.0,
        ),
        _target(
            "a clearly worse cheaper arm is not recommended",
            float(cheap["choice"] != "cheap"),
            1.0,
        ),
        _target("ft seed spread measured over 3 training seeds", float(len(seeds["token_f1_per_seed"])), 3.0),
    ]
    result = {
        "bench": "verdict_sanity",
        "quick": args.quick,
        "noise": noise,
        "retrieval": retrieval,
        "cheaper_worse": cheap,
        "ft_seed_spread": seeds,
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": targets,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Issue 22's two figures as one JSON object: injection cases contained by the prompt fence (every
attack of `bench/untrusted_cases.py` in every slot against six chat-template families, target: all),
and CLI bad-input cases ending in a traceback (target: 0).

    .venv/bin/python bench/untrusted_fence_cli.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from untrusted_cases import cli_figure, fence_figure  # noqa: E402


def main() -> None:
    t0 = time.perf_counter()
    fence = fence_figure()
    with tempfile.TemporaryDirectory() as tmp:
        cli = cli_figure(Path(tmp))
    out = {
        "bench": "untrusted_fence_cli",
        "fence": {k: v for k, v in fence.items() if k != "targets"},
        "cli": {k: v for k, v in cli.items() if k != "targets"},
        "seconds": round(time.perf_counter() - t0, 1),
        "targets": fence["targets"] + cli["targets"],
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()

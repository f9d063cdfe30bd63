"""The real TRACE examples (BeyonderXX/TRACE, LLM-CL_Benchmark/dataset_examples.txt, copied from
../shared/data/trace/examples) as {dataset: (prompt, answer)}, and TRACE dataset folders built from them."""

from __future__ import annotations

import json
import re
from pathlib import Path

EXAMPLES = Path(__file__).parent / "fixtures" / "data" / "trace_examples" / "dataset_examples.txt"


def parse_trace_examples(text: str) -> dict[str, tuple[str, str]]:
    """The '# prompt # / # answer #' layout of TRACE's dataset_examples.txt -> name: (prompt, answer)."""
    parts = re.split(r"^DATASET\d+ -> (.+?):[ \t]*$", text, flags=re.M)
    examples = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        separator = re.search(r"^-{8,}[ \t]*$", body, flags=re.M)
        examples[name] = (body[: separator.start()].strip("\n"), body[separator.end() :].strip())
    return examples


def trace_examples() -> dict[str, tuple[str, str]]:
    return parse_trace_examples(EXAMPLES.read_text(encoding="utf-8"))


def write_trace_folder(root: Path, datasets: dict[str, list[dict]], splits=("train", "eval", "test")) -> Path:
    """TRACE's layout: root/<dataset>/<split>.json, each a JSON list of {prompt, answer}."""
    for name, records in datasets.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for split in splits:
            (root / name / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return root

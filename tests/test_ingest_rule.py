"""The ingest rule end to end: through Snakemake, and through its script adapter for each bad input."""

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from inscl.core import artifacts

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "data"
SST2 = "task363_sst2_polarity_classification"
TARGETS = ["results/data/instances.parquet", "results/data/tasks.parquet", "results/data/dropped.parquet"]


def snakemake(workdir: Path, *targets) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    command += ["--configfile", str(workdir / "config.yaml"), "--cores", "1", *(targets or TARGETS)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def inscl_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("inscl error:", "inscl:"))]


def no_artifacts(workdir: Path) -> bool:
    data = workdir / "results" / "data"
    return not data.exists() or not any(data.iterdir())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_config_through_snakemake_then_nothing_to_do(tmp_path):
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    first = snakemake(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    instances = pd.read_parquet(tmp_path / TARGETS[0])
    tasks = pd.read_parquet(tmp_path / TARGETS[1])
    assert list(instances.columns) == artifacts.columns("instances") and list(tasks.columns) == artifacts.columns(
        "tasks"
    )
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert list(tasks["task"]) == config["orders"]["demo"]
    assert (tasks["n_instructions"] >= 5).all() and (tasks["n_train"] >= 200).all() and (tasks["n_test"] >= 50).all()
    assert instances["instance_id"].is_unique and len(instances) == (tasks["n_train"] + tasks["n_test"]).sum()
    assert isinstance(instances["output"].iloc[0][0], str)
    dropped = pd.read_parquet(tmp_path / TARGETS[2])
    assert list(dropped.columns) == artifacts.columns("dropped") and dropped.empty  # the demo drops nothing
    second = snakemake(tmp_path)
    assert second.returncode == 0
    assert "Nothing to be done" in second.stdout + second.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_config_key_typo_stops_snakemake_with_one_line(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["data"]["test_fracton"] = config["data"].pop("test_fraction")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "test_fracton" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert "unknown key 'test_fracton' in 'data'" in lines[0]
    assert no_artifacts(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bad_data_fails_the_rule_with_one_line_and_no_parquet(tmp_path):
    superni = tmp_path / "superni"
    shutil.copytree(FIXTURES / "superni", superni)
    broken = superni / f"{SST2}.json"
    broken.write_text(broken.read_text()[:2000])
    config = {
        "data": {
            "sources": [
                {
                    "name": "sni",
                    "type": "superni",
                    "path": str(superni),
                    "groups": {"sst2": {"tasks": [SST2]}, "math": {"categories": ["Mathematics"]}},
                }
            ]
        },
        "orders": {"main": ["sst2", "math"]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path)
    assert result.returncode != 0
    lines = inscl_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"inscl error: {broken}: malformed JSON: "), result.stderr[-3000:]
    assert no_artifacts(tmp_path)


# ---------------------------------------------------------------- each bad input through the rule's script


def run_ingest_script(workdir: Path, data: dict, orders: dict):
    """Run workflow/scripts/ingest.py as Snakemake's `script:` does, with the rule's inputs and outputs."""
    rule = SimpleNamespace(
        rule="ingest",
        config={"data": data, "orders": orders},
        input=[],
        output=SimpleNamespace(
            instances=str(workdir / TARGETS[0]), tasks=str(workdir / TARGETS[1]), dropped=str(workdir / TARGETS[2])
        ),
        params=SimpleNamespace(settings={"data": data}),
        resources={},
        log=[str(workdir / "logs" / "ingest.log")],
        threads=1,
        wildcards=SimpleNamespace(),
    )
    runpy.run_path(str(ROOT / "workflow" / "scripts" / "ingest.py"), init_globals={"snakemake": rule})


def break_superni(kind: str, root: Path) -> tuple[Path, str]:
    path = root / f"{SST2}.json"
    doc = json.loads(path.read_text())
    if kind == "malformed JSON":
        path.write_text(path.read_text().replace('"Instances": [', '"Instances": [,', 1))
        return path, "malformed JSON: Expecting value at byte"
    if kind == "missing field":
        del doc["Instances"][5]["input"]
        path.write_text(json.dumps(doc))
        return path, "record 5 (0-based index in Instances): field 'input': missing field"
    if kind == "empty instance list":
        doc["Instances"] = []
        path.write_text(json.dumps(doc))
        return path, "field 'Instances': empty instance list"
    if kind == "duplicate ids":
        doc["Instances"][6]["id"] = doc["Instances"][0]["id"]
        path.write_text(json.dumps(doc))
        return path, f"record 6 (0-based index in Instances): field 'id': duplicate id '{doc['Instances'][0]['id']}'"
    if kind == "non-UTF-8":
        raw = path.read_bytes()
        marker = json.dumps(doc["Instances"][1]["input"])[1:12].encode()
        path.write_bytes(raw.replace(marker, marker + b"\xc3\x28", 1))
        return path, "record 1 (0-based index in Instances): field 'input': not valid UTF-8"
    if kind == "missing source task":
        return Path(
            "config"
        ), "record 1: field 'data.sources[0].groups.sst2.tasks': source task 'task000_missing' not found"
    raise ValueError(kind)


@pytest.mark.parametrize(
    "kind",
    ["malformed JSON", "missing field", "empty instance list", "duplicate ids", "non-UTF-8", "missing source task"],
)
def test_each_bad_input_gives_one_line_and_no_parquet(kind, tmp_path, capsys):
    root = tmp_path / "superni"
    shutil.copytree(FIXTURES / "superni", root)
    file, expected = break_superni(kind, root)
    tasks = [SST2, "task000_missing"] if kind == "missing source task" else [SST2]
    data = {
        "sources": [
            {
                "name": "sni",
                "type": "superni",
                "path": str(root),
                "english_only": True,
                "groups": {"sst2": {"tasks": tasks}, "math": {"categories": ["Mathematics"]}},
            }
        ],
        "test_fraction": 0.2,
        "split_seed": 0,
        "max_train_per_task": None,
        "max_test_per_task": None,
    }
    with pytest.raises(SystemExit) as info:
        run_ingest_script(tmp_path, data, {"main": ["sst2", "math"]})
    assert info.value.code == 1
    lines = inscl_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"inscl error: {file}: ") and expected in lines[0], lines
    assert no_artifacts(tmp_path)


def test_the_rule_writes_what_english_only_dropped_and_logs_it(tmp_path):
    """A real German SuperNI task under a category group: ingested nowhere, reported in dropped.parquet
    and in logs/ingest.log."""
    root = tmp_path / "superni"
    shutil.copytree(FIXTURES / "superni", root)
    german = "task1138_xcsr_de_commonsense_mc_classification"
    shutil.copy(FIXTURES / "superni_languages" / f"{german}.json", root)
    shutil.copy(FIXTURES / "superni_languages" / "task073_commonsenseqa_answer_generation.json", root)
    data = {
        "sources": [
            {
                "name": "sni",
                "type": "superni",
                "path": str(root),
                "english_only": True,
                "groups": {"sst2": {"tasks": [SST2]}, "qa": {"categories": ["Question Answering"]}},
            }
        ],
        "test_fraction": 0.2,
        "split_seed": 0,
        "max_train_per_task": None,
        "max_test_per_task": None,
    }
    run_ingest_script(tmp_path, data, {"main": ["sst2", "qa"]})
    instances = artifacts.read(tmp_path / TARGETS[0], "instances")
    dropped = artifacts.read(tmp_path / TARGETS[2], "dropped")
    assert german not in set(instances["source_task"])
    assert dropped[["source_task", "task", "filter", "reason"]].values.tolist() == [
        [german, "qa", "english_only", "not English: Input_language German"]
    ]
    assert (
        f"english_only dropped 1 source tasks matched by category (4 instances): {german} from group qa"
        in (tmp_path / "logs" / "ingest.log").read_text()
    )

"""inscl.core.artifacts: one declaration of every artifact's columns, one writer and one reader."""

import os

import pandas as pd
import pyarrow.parquet as pq
import pytest

from inscl.core import artifacts
from inscl.core.io import InputError


def scores(**extra):
    return pd.DataFrame(
        {
            "task": ["a", "b"],
            "metric": ["exact_match"] * 2,
            "primary": True,
            "score": [50.0, 100.0],
            "n": [2, 4],
            **extra,
        }
    )


def test_write_casts_to_the_declared_schema_and_drops_extra_columns(tmp_path):
    path = tmp_path / "sub" / "scores.parquet"
    artifacts.write(scores(note=["x", "y"]), "scores", path)
    assert pq.read_schema(path).names == ["task", "metric", "primary", "score", "n"]
    assert str(pq.read_schema(path).field("n").type) == "int64"
    assert artifacts.read(path, "scores")["score"].tolist() == [50.0, 100.0]


def test_write_accepts_row_dicts_with_nested_types(tmp_path):
    rows = [{"instruction_id": "i1", "tags": ["a", "b"]}, {"instruction_id": "i2", "tags": []}]
    artifacts.write(rows, "tags", tmp_path / "tags.parquet")
    back = artifacts.read(tmp_path / "tags.parquet", "tags")
    assert [list(t) for t in back["tags"]] == [["a", "b"], []]


def test_a_missing_column_is_an_error_and_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="artifact 'scores': missing column 'n'"):
        artifacts.write(scores().drop(columns="n"), "scores", tmp_path / "scores.parquet")
    assert list(tmp_path.iterdir()) == []


def test_reading_a_file_without_a_declared_column_names_file_and_column(tmp_path):
    path = tmp_path / "x.parquet"
    scores().drop(columns="score").to_parquet(path)
    with pytest.raises(InputError) as info:
        artifacts.read(path, "scores")
    assert str(info.value) == f"{path}: field 'score': not a scores artifact: missing column"


def test_artifacts_get_the_usual_file_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    artifacts.write(scores(), "scores", tmp_path / "f.parquet")
    assert (tmp_path / "f.parquet").stat().st_mode & 0o777 == 0o666 & ~umask


def test_every_fixed_path_is_under_results_and_every_type_parses():
    for name, spec in artifacts.ARTIFACTS.items():
        assert spec.path is None or spec.path.startswith("results/")
        assert artifacts.arrow_schema(name).names == spec.names


def test_docs_list_every_artifact_with_exactly_its_columns():
    """docs/artifacts.md is written by hand; this keeps it from drifting from the declarations."""
    import re
    from pathlib import Path

    documented = {}
    for line in (Path(__file__).resolve().parents[1] / "docs" / "artifacts.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in artifacts.ARTIFACTS:
            # drop parenthesised notes, which may hold commas of their own
            columns = re.sub(r"\((?:[^()]|\([^()]*\))*\)", "", cells[3])
            documented[cells[0]] = ([c.strip() for c in columns.split(",")], cells[1].strip("`"))
    assert sorted(documented) == sorted(artifacts.ARTIFACTS)
    for name, (columns, path) in documented.items():
        assert columns == artifacts.columns(name), name
        if artifacts.ARTIFACTS[name].path:
            assert path == artifacts.ARTIFACTS[name].path, name

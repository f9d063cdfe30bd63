"""The HTML report: built from small hand-made artifacts (2 methods, 3 tasks, 2 seeds)."""
from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from inscl.io import InputError
from inscl.report import build_report, format_mean_std, load_inputs, run_of, write_report

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]

TASKS = ["alpha", "beta", "gamma"]
ORDERS = {"o1": TASKS}
METHODS = ["no_replay", "inscl"]
SEEDS = [0, 1]


def score_matrix() -> pd.DataFrame:
    """no_replay forgets earlier tasks; inscl keeps most of them. Seed 1 is 2 points above seed 0."""
    keep = {"no_replay": 0.2, "inscl": 0.9}
    rows = []
    for method in METHODS:
        for seed in SEEDS:
            for stage in range(4):
                for index, task in enumerate(TASKS, start=1):
                    if stage < index:
                        score = 5.0
                    elif stage == index:
                        score = 80.0
                    else:
                        score = 80.0 * keep[method] ** (stage - index)
                    rows.append(dict(order="o1", method=method, seed=seed, stage=stage, task=task,
                                     task_index=index, score=score + 2.0 * seed))
    return pd.DataFrame(rows)


def cl_metrics() -> pd.DataFrame:
    rows = []
    for method, base in [("no_replay", 60.0), ("inscl", 90.0)]:
        for seed in SEEDS:
            rows.append(dict(order="o1", method=method, seed=seed, metric="OP", task=None, stage=None, value=base))
            for stage in (2, 3):
                rows.append(dict(order="o1", method=method, seed=seed, metric="relative_gain", task=None,
                                 stage=stage, value=base + stage + seed))
            for task in TASKS[:2]:
                rows.append(dict(order="o1", method=method, seed=seed, metric="forgetting_rate", task=task,
                                 stage=None, value=0.5 if method == "no_replay" else 0.1))
    return pd.DataFrame(rows)


SUMMARY = pd.DataFrame([
    dict(order="o1", method="no_replay", metric="OP", mean=41.234, std=1.5, n_seeds=2),
    dict(order="o1", method="no_replay", metric="BWT", mean=-52.5, std=0.25, n_seeds=2),
    dict(order="o1", method="no_replay", metric="FWT", mean=0.0, std=0.0, n_seeds=2),
    dict(order="o1", method="no_replay", metric="forgetting", mean=52.5, std=0.25, n_seeds=2),
    dict(order="o1", method="inscl", metric="OP", mean=71.875, std=1.125, n_seeds=2),
    dict(order="o1", method="inscl", metric="BWT", mean=-12.0, std=0.5, n_seeds=2),
    dict(order="o1", method="inscl", metric="FWT", mean=0.0, std=0.0, n_seeds=2),
    dict(order="o1", method="inscl", metric="forgetting", mean=12.0, std=0.5, n_seeds=2),
    dict(order="o1", method="multitask", metric="OP", mean=85.0, std=np.nan, n_seeds=1),
])


def distances() -> pd.DataFrame:
    values = {("alpha", "beta"): 0.21, ("alpha", "gamma"): 0.47, ("beta", "gamma"): 0.33}
    rows = []
    for (a, b), d in values.items():
        for x, y in [(a, b), (b, a)]:
            rows.append(dict(task_a=x, task_b=y, distance=d, solver="emd", converged=True, n_iter=10,
                             seconds=0.01, n_a=3, n_b=3))
    return pd.DataFrame(rows)


def composition() -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        rows += [
            dict(order="o1", method="inscl", seed=seed, stage=2, current_task="beta", source_task="alpha",
                 n_examples=10),
            dict(order="o1", method="inscl", seed=seed, stage=3, current_task="gamma", source_task="alpha",
                 n_examples=12 + seed),
            dict(order="o1", method="inscl", seed=seed, stage=3, current_task="gamma", source_task="beta",
                 n_examples=8 - seed),
        ]
    return pd.DataFrame(rows)


def tags_raw() -> pd.DataFrame:
    rows = []
    for i in range(5):
        status = "failed" if i == 4 else "ok"
        rows.append(dict(
            instruction_id=f"i{i}", instruction=f"instruction <{i}>", tags=[{"tag": "t", "explanation": "e"}],
            backend="openai", model="gpt-4", prompt_version="instag-v1",
            prompt_tokens=1000 if status == "ok" else 0, completion_tokens=250 if status == "ok" else 0,
            cost_usd=0.045 if status == "ok" else 0.0, status=status,
            error="HTTP 429 <rate limit>" if status == "failed" else None, raw="",
        ))
    return pd.DataFrame(rows)


def verdicts() -> pd.DataFrame:
    outcomes = ["win"] * 5 + ["tie"] * 3 + ["lose"] * 2
    return pd.DataFrame([
        dict(set="helpful", prompt_id=str(i), prompt=f"p{i}", answer_model="a", answer_base="b",
             verdict_ab="[[A]]", verdict_ba="[[B]]", outcome=outcome)
        for i, outcome in enumerate(outcomes)
    ])


def general(run: str) -> pd.DataFrame:
    shift = 0.0 if run == "base" else -0.05
    return pd.DataFrame([
        dict(task="boolq", metric="acc,none", value=0.62 + shift),
        dict(task="boolq", metric="acc_stderr,none", value=0.01),
        dict(task="piqa", metric="acc,none", value=0.70 + shift),
    ])


@pytest.fixture
def artifacts(tmp_path):
    return write_artifacts(tmp_path)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """The report with every section, built once for the tests that only read it."""
    return build_report(load_inputs(**write_artifacts(tmp_path_factory.mktemp("full"))), ORDERS, METHODS, TASKS)


def write_artifacts(tmp_path):
    paths = {
        "matrix": tmp_path / "results/metrics/score_matrix.parquet",
        "per_run": tmp_path / "results/metrics/cl_metrics.parquet",
        "summary": tmp_path / "results/metrics/summary.parquet",
        "distances": tmp_path / "results/replay/distances.parquet",
        "tags_raw": tmp_path / "results/instructions/tags_raw.parquet",
    }
    frames = [score_matrix(), cl_metrics(), SUMMARY, distances(), tags_raw()]
    for path, frame in zip(paths.values(), frames):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    composition_path = tmp_path / "results/replay/o1/composition.parquet"
    composition_path.parent.mkdir(parents=True)
    composition().to_parquet(composition_path)
    paths["composition"] = [composition_path]
    final = "o1/{method}/seed{seed}/stage3"
    paths["judge"] = []
    for method in METHODS:
        for seed in SEEDS:
            path = tmp_path / "results/judge" / final.format(method=method, seed=seed) / "verdicts.parquet"
            path.parent.mkdir(parents=True)
            verdicts().to_parquet(path)
            paths["judge"].append(path)
    paths["general"] = []
    for run in ["base", final.format(method="inscl", seed=0)]:
        path = tmp_path / "results/general" / run / "results.parquet"
        path.parent.mkdir(parents=True)
        general(run).to_parquet(path)
        paths["general"].append(path)
    return paths


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "data", "action", "poster"):
                self.urls.append(value)
                if tag == "img":
                    self.images.append(value)


def parse(page: str) -> Links:
    links = Links()
    links.feed(page)
    return links


def test_report_is_self_contained_and_complete(full_report):
    page, figures = full_report
    links = parse(page)
    assert all(url.startswith("data:image/png;base64,") or url.startswith("#") for url in links.urls), links.urls
    assert "@import" not in page and "url(" not in page
    # mean ± std over seeds from summary.parquet, one seed shows the mean alone
    for text in ["41.23 ± 1.50", "-52.50 ± 0.25", "71.88 ± 1.12", "-12.00 ± 0.50", "85.00"]:
        assert text in page
    assert "<strong>71.88 ± 1.12</strong>" in page  # best OP
    assert "<strong>12.00 ± 0.50</strong>" in page  # lowest forgetting
    # one score-matrix heat map per method, plus the other figures
    assert sorted(n for n in figures if n.startswith("score_matrix--")) == [
        "score_matrix--o1--inscl.png", "score_matrix--o1--no_replay.png",
    ]
    for name in ["forgetting--o1.png", "composition--o1.png", "distances--all.png", "relative_gain--o1.png",
                 "judge--outcomes.png"]:
        assert name in figures
    assert len(links.images) == len(figures)
    # tagging cost: 4 ok + 1 failed requests, tokens and dollars summed, the failure escaped
    cost = page[page.index('id="cost"'):]
    assert ">4,000<" in cost and ">1,000<" in cost and ">0.1800<" in cost
    assert "HTTP 429 &lt;rate limit&gt;" in cost
    row = re.search(r"<td[^>]*>openai</td>(.*?)</tr>", cost).group(1)
    cells = re.findall(r">([^<]*)</td>", row)
    assert cells[2:7] == ["5", "4", "1", "0", "5"]
    # judge and general sections
    assert 'id="judge"' in page and "50.0" in page and "+30.0" in page
    assert 'id="general"' in page and "-0.0500" in page and "stderr" not in page


def test_optional_sections_only_when_given(artifacts):
    plain = {k: v for k, v in artifacts.items() if k not in ("judge", "general")}
    page, figures = build_report(load_inputs(**plain), ORDERS, METHODS, TASKS)
    assert 'id="judge"' not in page and 'id="general"' not in page
    assert "judge--outcomes.png" not in figures
    page, _ = build_report(load_inputs(**plain, judge=artifacts["judge"]), ORDERS, METHODS, TASKS)
    assert 'id="judge"' in page and 'id="general"' not in page


def test_embedded_images_are_real_pictures(full_report):
    page, figures = full_report
    for url in parse(page).images:
        png = base64.b64decode(url.removeprefix("data:image/png;base64,"), validate=True)
        image = Image.open(io.BytesIO(png))
        image.verify()
        image = Image.open(io.BytesIO(png)).convert("L")
        assert image.width > 300 and image.height > 200
        pixels = np.asarray(image)
        assert pixels.std() > 10 and len(np.unique(pixels)) > 20  # drawn, not blank
    assert len(set(figures.values())) == len(figures)


def test_missing_reference_and_nan_values_degrade_gracefully(artifacts, tmp_path):
    summary = SUMMARY.copy()
    summary.loc[summary["metric"] == "FWT", "mean"] = np.nan
    summary.to_parquet(artifacts["summary"])
    metrics = cl_metrics()
    metrics[metrics["metric"] != "relative_gain"].to_parquet(artifacts["per_run"])
    matrix = score_matrix()
    matrix.loc[(matrix["stage"] == 0) & (matrix["method"] == "inscl"), "score"] = np.nan
    matrix.to_parquet(artifacts["matrix"])
    pd.DataFrame(columns=composition().columns).to_parquet(artifacts["composition"][0])
    page, figures = build_report(load_inputs(**artifacts), ORDERS, METHODS, TASKS)
    assert "No relative gain" in page and "Relative gain (%)</th>" not in page
    assert ">FWT</th>" not in page
    assert "relative_gain--o1.png" not in figures and "composition--o1.png" not in figures
    assert "score_matrix--o1--inscl.png" in figures


def test_write_report_is_atomic_and_escapes_names(artifacts, tmp_path, full_report):
    tags = tags_raw()
    tags.loc[0, "backend"] = "<script>alert(1)</script>"
    tags.to_parquet(artifacts["tags_raw"])
    out = tmp_path / "results/report"
    (out / "plots").mkdir(parents=True)
    (out / "plots/stale.png").write_bytes(b"old")
    write_report(load_inputs(**artifacts), ORDERS, METHODS, TASKS, out / "index.html", out / "plots")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(full_report[1])
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_bad_input_names_file_and_field(artifacts):
    score_matrix().drop(columns=["score"]).to_parquet(artifacts["matrix"])
    with pytest.raises(InputError, match=r"score_matrix\.parquet: field 'score': missing column"):
        load_inputs(**artifacts)
    artifacts["matrix"].write_text("not parquet")
    with pytest.raises(InputError, match=r"score_matrix\.parquet: cannot read as parquet"):
        load_inputs(**artifacts)


def test_helpers():
    assert format_mean_std(1.0, 0.5, 2) == "1.00 ± 0.50"
    assert format_mean_std(1.0, 0.0, 1) == "1.00"
    assert format_mean_std(np.nan, 0.5, 2) == "–"
    assert run_of("results/judge/o1/inscl/seed0/stage3/verdicts.parquet", "judge") == "o1/inscl/seed0/stage3"
    assert run_of("/x/results/general/base/results.parquet", "general") == "base"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_snakemake_rule_and_snakemake_report(tmp_path):
    """The report rule runs through Snakemake on given artifacts, and `snakemake --report` picks up its plots."""
    frames = {
        "results/metrics/score_matrix.parquet": score_matrix(),
        "results/metrics/cl_metrics.parquet": cl_metrics(),
        "results/metrics/summary.parquet": SUMMARY,
        "results/replay/distances.parquet": distances(),
        "results/instructions/tags_raw.parquet": tags_raw(),
        "results/replay/o1/composition.parquet": composition(),
    }
    for path, frame in frames.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(tmp_path / path)
    (tmp_path / "config.yaml").write_text(
        "data:\n  sources:\n    - {name: demo, type: demo}\n"
        "orders:\n  o1: [alpha, beta, gamma]\nseeds: [0, 1]\nmethods: [no_replay, inscl]\n"
    )
    snakemake = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "--allowed-rules", "report",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(snakemake + ["results/report/index.html"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    page = (tmp_path / "results/report/index.html").read_text(encoding="utf-8")
    assert "71.88 ± 1.12" in page
    plots = sorted(p.name for p in (tmp_path / "results/report/plots").iterdir())
    assert "score_matrix--o1--inscl.png" in plots and "distances--all.png" in plots
    run = subprocess.run(snakemake + ["--report", "smk_report.html"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    for name in plots:
        assert name.startswith(".") or f"Adding {name}" in run.stderr
    snakemake_report = (tmp_path / "smk_report.html").read_text(encoding="utf-8")
    assert "Forgetting curves for order" in snakemake_report  # the caption, rendered per figure

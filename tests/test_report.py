"""The HTML report: built from small hand-made artifacts (2 methods, 3 tasks, 2 seeds), written as real
parquet files through inscl.core.artifacts at their DAG paths."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from workflow import snakemake

from inscl.core import artifacts, runs
from inscl.core.io import InputError
from inscl.report.report import build_report, format_mean_std, load_inputs, write_report

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[1]

TASKS = ["alpha", "beta", "gamma"]
ORDERS = {"o1": TASKS}
METHODS = ["no_replay", "inscl"]
SEEDS = [0, 1]
FINAL = "o1/{method}/seed{seed}/stage3"


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
                    rows.append(
                        dict(
                            order="o1",
                            method=method,
                            seed=seed,
                            stage=stage,
                            task=task,
                            task_index=index,
                            score=score + 2.0 * seed,
                        )
                    )
    return pd.DataFrame(rows)


def cl_metrics() -> pd.DataFrame:
    rows = []
    for method, base in [("no_replay", 60.0), ("inscl", 90.0)]:
        for seed in SEEDS:
            rows.append(dict(order="o1", method=method, seed=seed, metric="OP", task=None, stage=None, value=base))
            for stage in (2, 3):
                rows.append(
                    dict(
                        order="o1",
                        method=method,
                        seed=seed,
                        metric="relative_gain",
                        task=None,
                        stage=stage,
                        value=base + stage + seed,
                    )
                )
            for task in TASKS[:2]:
                rows.append(
                    dict(
                        order="o1",
                        method=method,
                        seed=seed,
                        metric="forgetting_rate",
                        task=task,
                        stage=None,
                        value=0.5 if method == "no_replay" else 0.1,
                    )
                )
    frame = pd.DataFrame(rows)
    return frame.assign(stage=frame["stage"].astype("Int64"))


SUMMARY = pd.DataFrame(
    [
        dict(order="o1", method="no_replay", metric="OP", mean=41.234, std=1.5, n_seeds=2),
        dict(order="o1", method="no_replay", metric="BWT", mean=-52.5, std=0.25, n_seeds=2),
        dict(order="o1", method="no_replay", metric="FWT", mean=0.0, std=0.0, n_seeds=2),
        dict(order="o1", method="no_replay", metric="forgetting", mean=52.5, std=0.25, n_seeds=2),
        dict(order="o1", method="inscl", metric="OP", mean=71.875, std=1.125, n_seeds=2),
        dict(order="o1", method="inscl", metric="BWT", mean=-12.0, std=0.5, n_seeds=2),
        dict(order="o1", method="inscl", metric="FWT", mean=0.0, std=0.0, n_seeds=2),
        dict(order="o1", method="inscl", metric="forgetting", mean=12.0, std=0.5, n_seeds=2),
        dict(order="o1", method="multitask", metric="OP", mean=85.0, std=np.nan, n_seeds=1),
    ]
)


def distances() -> pd.DataFrame:
    values = {("alpha", "beta"): 0.21, ("alpha", "gamma"): 0.47, ("beta", "gamma"): 0.33}
    rows = []
    for (a, b), d in values.items():
        for x, y in [(a, b), (b, a)]:
            rows.append(
                dict(
                    task_a=x,
                    task_b=y,
                    distance=d,
                    solver="emd",
                    converged=True,
                    n_iter=10,
                    max_iter=100,
                    seconds=0.01,
                    n_a=3,
                    n_b=3,
                )
            )
    return pd.DataFrame(rows)


def composition(seed: int) -> pd.DataFrame:
    """The composition table of inscl's replay folder for one seed (stage 1 replays nothing: no rows)."""
    return pd.DataFrame(
        [
            dict(
                order="o1", method="inscl", seed=seed, stage=2, current_task="beta", source_task="alpha", n_examples=10
            ),
            dict(
                order="o1",
                method="inscl",
                seed=seed,
                stage=3,
                current_task="gamma",
                source_task="alpha",
                n_examples=12 + seed,
            ),
            dict(
                order="o1",
                method="inscl",
                seed=seed,
                stage=3,
                current_task="gamma",
                source_task="beta",
                n_examples=8 - seed,
            ),
        ]
    )


def tags_raw() -> pd.DataFrame:
    rows = []
    for i in range(5):
        status = "failed" if i == 4 else "ok"
        rows.append(
            dict(
                instruction_id=f"i{i}",
                instruction=f"instruction <{i}>",
                tags=[{"tag": "t", "explanation": "e"}],
                backend="openai",
                model="gpt-4",
                prompt_version="instag-v1",
                prompt_tokens=1000 if status == "ok" else 0,
                completion_tokens=250 if status == "ok" else 0,
                cost_usd=0.045 if status == "ok" else 0.0,
                status=status,
                error="HTTP 429 <rate limit>" if status == "failed" else None,
                raw="",
            )
        )
    return pd.DataFrame(rows)


def rate_row(run: str, judged_set: str, win: int, tie: int, lose: int) -> dict:
    n = win + tie + lose
    rates = {f"{k}_rate": 100.0 * v / n for k, v in [("win", win), ("tie", tie), ("lose", lose)]}
    delta = rates["win_rate"] - rates["lose_rate"]
    return dict(run=run, set=judged_set, n=n, win=win, tie=tie, lose=lose, **rates, delta=delta, cost_usd=0.01 * n)


def judge_rates() -> pd.DataFrame:
    """Every final model judged on one set (5 wins, 3 ties, 2 losses), plus its "all" row."""
    return pd.DataFrame(
        [
            rate_row(FINAL.format(method=method, seed=seed), judged_set, 5, 3, 2)
            for method in METHODS
            for seed in SEEDS
            for judged_set in ["helpful", "all"]
        ]
    )


def general_delta() -> pd.DataFrame:
    run = FINAL.format(method="inscl", seed=0)
    return pd.DataFrame(
        [
            dict(run=run, task="boolq", metric="acc", before=62.0, after=57.0, delta=-5.0),
            dict(run=run, task="piqa", metric="acc", before=70.0, after=71.0, delta=1.0),
        ]
    )


@pytest.fixture
def inputs(tmp_path):
    return write_artifacts(tmp_path)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """The report with every section, built once for the tests that only read it."""
    return build_report(load_inputs(write_artifacts(tmp_path_factory.mktemp("full"))), ORDERS, METHODS, TASKS)


def write_artifacts(root: Path) -> dict:
    """Every report input at its DAG path under `root`; returns load_inputs' argument."""
    frames = {
        "matrix": ("score_matrix", score_matrix()),
        "per_run": ("cl_metrics", cl_metrics()),
        "summary": ("summary", SUMMARY),
        "distances": ("distances", distances()),
        "tags_raw": ("tags_raw", tags_raw()),
        "judge": ("judge_rates", judge_rates()),
        "general": ("general_delta", general_delta()),
    }
    paths = {}
    for key, (name, frame) in frames.items():
        paths[key] = root / artifacts.path(name)
        artifacts.write(frame, name, paths[key])
    # no_replay replays nothing: no folder
    paths["replay"] = [root / runs.replay_folder("o1", "inscl", seed) for seed in SEEDS]
    for seed, folder in zip(SEEDS, paths["replay"]):
        artifacts.write(composition(seed), "composition", folder / "composition.parquet")
    return paths


def without(paths: dict, *keys: str) -> dict:
    return {key: value for key, value in paths.items() if key not in keys}


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


def section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


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
        "score_matrix--o1--inscl.png",
        "score_matrix--o1--no_replay.png",
    ]
    for name in [
        "forgetting--o1.png",
        "composition--o1.png",
        "distances--all.png",
        "relative_gain--o1.png",
        "judge--outcomes.png",
    ]:
        assert name in figures
    assert len(links.images) == len(figures)
    # sections in page order
    anchors = re.findall(r'<section id="([^"]+)">', page)
    assert anchors == ["metrics", "order-o1", "distances", "cost", "judge", "general"]
    # tagging cost: 4 ok + 1 failed requests, tokens and dollars summed, the failure escaped
    cost = section(page, "cost")
    assert ">4,000<" in cost and ">1,000<" in cost and ">0.1800<" in cost
    assert "HTTP 429 &lt;rate limit&gt;" in cost
    row = re.search(r"<td[^>]*>openai</td>(.*?)</tr>", cost).group(1)
    cells = re.findall(r">([^<]*)</td>", row)
    assert cells[2:7] == ["5", "4", "1", "0", "5"]
    # judge: the rates as given, one row per final model (its "all" row repeats its only set)
    judge = section(page, "judge")
    assert judge.count("<tr>") == 1 + 4 and ">all<" not in judge
    assert ">50.0<" in judge and ">30.0<" in judge and ">20.0<" in judge and ">+30.0<" in judge
    # general: per-task before/after/delta and Delta R^G = mean of delta = (-5 + 1) / 2
    general = section(page, "general")
    assert ">-5.00<" in general and ">1.00<" in general and ">-2.00<" in general


def test_composition_section_averages_the_replay_folders_over_seeds(inputs):
    """The figure is drawn from the composition tables of the replay folders: one seed's folder gives
    another figure than both seeds', and no folder gives a note and no figure."""
    both = build_report(load_inputs(inputs), ORDERS, METHODS, TASKS)[1]["composition--o1.png"]
    one = build_report(load_inputs({**inputs, "replay": inputs["replay"][1:]}), ORDERS, METHODS, TASKS)
    assert one[1]["composition--o1.png"] != both
    page, figures = build_report(load_inputs({**inputs, "replay": []}), ORDERS, METHODS, TASKS)
    assert "composition--o1.png" not in figures
    assert "No replay composition for this order." in page


def test_optional_sections_only_when_given(inputs):
    plain = without(inputs, "distances", "tags_raw", "judge", "general")
    page, figures = build_report(load_inputs(plain), ORDERS, METHODS, TASKS)
    for anchor in ["distances", "cost", "judge", "general"]:
        assert f'id="{anchor}"' not in page and f'href="#{anchor}"' not in page
    assert "distances--all.png" not in figures and "judge--outcomes.png" not in figures
    assert "composition--o1.png" in figures
    # None (Snakemake's input.get for an absent name) is the same as leaving the key out
    page, _ = build_report(load_inputs({**plain, "judge": inputs["judge"], "general": None}), ORDERS, METHODS, TASKS)
    assert 'id="judge"' in page and 'id="general"' not in page and 'id="distances"' not in page


def test_judge_section_renders_the_rates_it_is_given(inputs):
    """Rates are shown as judge_rates holds them, not recomputed from the counts; with two sets the
    "all" row is shown too."""
    run = FINAL.format(method="inscl", seed=0)
    rates = pd.DataFrame(
        [
            rate_row(run, "harmless", 1, 1, 2) | dict(win_rate=12.5, delta=-37.5),
            rate_row(run, "helpful", 3, 1, 0),
            rate_row(run, "all", 4, 2, 2),
        ]
    )
    artifacts.write(rates, "judge_rates", inputs["judge"])
    judge = section(build_report(load_inputs(inputs), ORDERS, METHODS, TASKS)[0], "judge")
    assert judge.count("<tr>") == 1 + 3
    harmless = judge.split(">harmless<")[1].split("</tr>")[0]
    assert ">12.5<" in harmless and ">-37.5<" in harmless and ">-25.0<" not in harmless  # 1 win of 4 is not 12.5%
    assert ">all<" in judge and ">+25.0<" in judge
    artifacts.write(rates.iloc[:0], "judge_rates", inputs["judge"])
    page, figures = build_report(load_inputs(inputs), ORDERS, METHODS, TASKS)
    assert "No judged runs." in section(page, "judge") and "judge--outcomes.png" not in figures


def test_general_section_shows_the_delta_of_the_metrics_stage(inputs, tmp_path):
    """Delta R^G in the page is the mean of general_delta's delta per run, i.e. the tested definition
    (inscl.evaluation.general_ability.general_delta) as the metrics stage writes it."""
    from inscl.evaluation.general_ability import general_delta as tested_delta
    from inscl.evaluation.metrics import general_deltas

    results = {
        "base": pd.DataFrame(
            dict(
                task=["boolq", "gsm8k", "gsm8k"],
                metric=["acc", "exact_match,strict-match", "f1"],
                value=[62.0, 30.0, 10.0],
            )
        ),
        FINAL.format(method="inscl", seed=0): pd.DataFrame(
            dict(
                task=["boolq", "gsm8k", "gsm8k"],
                metric=["acc", "exact_match,strict-match", "f1"],
                value=[58.5, 33.0, 90.0],
            )
        ),
        FINAL.format(method="no_replay", seed=0): pd.DataFrame(
            dict(
                task=["boolq", "gsm8k", "gsm8k"],
                metric=["acc", "exact_match,strict-match", "f1"],
                value=[40.0, 20.0, 0.0],
            )
        ),
    }
    paths = []
    for run, frame in results.items():
        paths.append(tmp_path / runs.GENERAL / run / "results.parquet")
        artifacts.write(frame, "general", paths[-1])
    artifacts.write(general_deltas(paths), "general_delta", inputs["general"])
    general = section(build_report(load_inputs(inputs), ORDERS, METHODS, TASKS)[0], "general")
    overall = general[general.index("ΔR<sup>G</sup></h4>") :]
    for run in results:
        if run == "base":
            continue
        expected = tested_delta(results["base"], results[run])[1]
        assert re.search(rf">{re.escape(run)}</td><td class=\"num\">{expected:,.2f}</td>", overall), (run, expected)
    assert ">-0.25<" in overall  # inscl: (-3.5 + 3) / 2 on the headline metrics (f1 is not one)
    artifacts.write(general_deltas(paths[:1]), "general_delta", inputs["general"])
    assert "No general-ability results." in build_report(load_inputs(inputs), ORDERS, METHODS, TASKS)[0]


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


def test_missing_reference_and_nan_values_degrade_gracefully(inputs):
    summary = SUMMARY.copy()
    summary.loc[summary["metric"] == "FWT", "mean"] = np.nan
    artifacts.write(summary, "summary", inputs["summary"])
    metrics = cl_metrics()
    artifacts.write(metrics[metrics["metric"] != "relative_gain"], "cl_metrics", inputs["per_run"])
    matrix = score_matrix()
    matrix.loc[(matrix["stage"] == 0) & (matrix["method"] == "inscl"), "score"] = np.nan
    artifacts.write(matrix, "score_matrix", inputs["matrix"])
    page, figures = build_report(load_inputs({**inputs, "replay": []}), ORDERS, METHODS, TASKS)
    assert "No relative gain" in page and "Relative gain (%)</th>" not in page
    assert ">FWT</th>" not in page
    assert "relative_gain--o1.png" not in figures and "composition--o1.png" not in figures
    assert "score_matrix--o1--inscl.png" in figures


def test_write_report_is_atomic_and_escapes_names(inputs, tmp_path, full_report):
    tags = tags_raw()
    tags.loc[0, "backend"] = "<script>alert(1)</script>"
    artifacts.write(tags, "tags_raw", inputs["tags_raw"])
    out = tmp_path / "results/report"
    (out / "plots").mkdir(parents=True)
    (out / "plots/stale.png").write_bytes(b"old")
    write_report(load_inputs(inputs), ORDERS, METHODS, TASKS, out / "index.html", out / "plots")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(full_report[1])
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_bad_input_names_file_and_field(inputs):
    score_matrix().drop(columns=["score"]).to_parquet(inputs["matrix"])  # not written by its stage
    with pytest.raises(InputError, match=r"score_matrix\.parquet: field 'score': not a score_matrix artifact"):
        load_inputs(inputs)
    artifacts.write(score_matrix(), "score_matrix", inputs["matrix"])
    judge_rates().drop(columns=["win_rate"]).to_parquet(inputs["judge"])
    with pytest.raises(InputError, match=r"judge\.parquet: field 'win_rate': not a judge_rates artifact"):
        load_inputs(inputs)
    artifacts.write(judge_rates(), "judge_rates", inputs["judge"])
    (inputs["replay"][0] / "composition.parquet").unlink()
    with pytest.raises(InputError, match=r"seed0: replay folder without composition\.parquet"):
        load_inputs(inputs)
    with pytest.raises(ValueError, match="unknown report input 'composition'"):
        load_inputs({**inputs, "composition": inputs["replay"]})
    with pytest.raises(ValueError, match="report input 'summary' is required"):
        load_inputs(without(inputs, "summary"))


def test_helpers():
    assert format_mean_std(1.0, 0.5, 2) == "1.00 ± 0.50"
    assert format_mean_std(1.0, 0.0, 1) == "1.00"
    assert format_mean_std(np.nan, 0.5, 2) == "–"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_snakemake_report_picks_up_the_report_plots(fresh_copy_of_finished_run):
    """On a finished run, `snakemake --report` adds every plot of the report rule, with its caption."""
    run = fresh_copy_of_finished_run
    plots = sorted(p.name for p in (run / "results/report/plots").iterdir())
    assert "score_matrix--demo--inscl.png" in plots and "distances--all.png" in plots
    result = snakemake(run, "--report", "smk_report.html", snakefile=run / "Snakefile")
    for name in plots:
        assert name.startswith(".") or f"Adding {name}" in result.stderr
    snakemake_report = (run / "smk_report.html").read_text(encoding="utf-8")
    assert "Forgetting curves for order" in snakemake_report  # the caption, rendered per figure

"""Resumable prediction: a predict job killed with SIGKILL, then rerun, writes the same predictions.parquet as
an uninterrupted job, and the rerun generates only the examples the killed job had not saved."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fixtures.eval.demo_models import build_demo_models, demo_instances

from inscl.core import artifacts
from inscl.evaluation.predict import ChunkStore

JOB = Path(__file__).with_name("predict_job.py")
CHUNK = 20


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained tiny model: it never stops early, so every example costs 24 tokens and the job is slow
    enough to be killed half-way."""
    folder = tmp_path_factory.mktemp("resume")
    instances = demo_instances()
    instances.to_parquet(folder / "instances.parquet")
    build_demo_models(folder, instances, steps=0)
    return folder


def job(folder, output):
    command = [sys.executable, str(JOB), str(folder), str(folder / "instances.parquet"), str(output), str(CHUNK)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_predict_job_resumes_and_generates_only_the_missing_examples(untrained, tmp_path):
    output = tmp_path / "killed" / "predictions.parquet"
    chunks = output.with_suffix(".chunks")
    process = job(untrained, output)
    while len(list(chunks.glob("chunk-*.parquet"))) < 3:  # let it save a few chunks, then kill it
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = ChunkStore(chunks, json.loads((chunks / "fingerprint.json").read_text())).finished()
    done = sum(len(frame) for frame in saved.values())
    assert not output.exists() and 0 < done < 360

    rerun = job(untrained, output)
    out, err = rerun.communicate(timeout=500)
    assert rerun.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["generated"] == 360 - done
    print(f"killed with {done} of 360 examples saved; the rerun generated {360 - done}")
    assert not chunks.exists()

    whole = tmp_path / "whole" / "predictions.parquet"
    straight = job(untrained, whole)
    out, err = straight.communicate(timeout=500)
    assert straight.returncode == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["generated"] == 360
    resumed, uninterrupted = artifacts.read(output, "predictions"), artifacts.read(whole, "predictions")
    pd.testing.assert_frame_equal(resumed, uninterrupted)
    assert (uninterrupted["finish"] == "length").all() and (uninterrupted["generated_tokens"] == 24).all()


def test_chunks_saved_for_other_settings_are_discarded(tmp_path):
    folder = tmp_path / "p.chunks"
    store = ChunkStore(folder, "fingerprint-a")
    frame = pd.DataFrame(
        dict(
            task=["t"], instance_id=["1"], prompt=["p"], prediction=["x"], references=[["x"]], prompt_tokens=[3],
            truncated_tokens=[0], max_new_tokens=[4], generated_tokens=[2], finish=["eos"],
        )
    )  # fmt: skip
    store.save(0, frame)
    assert list(ChunkStore(folder, "fingerprint-a").finished()) == [0]
    assert ChunkStore(folder, "fingerprint-b").finished() == {}

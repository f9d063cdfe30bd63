"""Shared fixtures. The OpenAI-compatible server is a real HTTP server on 127.0.0.1 (tests/openai_server.py)."""

import secrets
import shutil

import pytest
from openai_server import OpenAIServer
from workflow import TEST_CONFIG, copy_checkout, snakemake


@pytest.fixture
def api_key(monkeypatch):
    """A random secret set as OPENAI_API_KEY, so a test can grep for leaks."""
    key = f"sk-test-{secrets.token_hex(16)}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


@pytest.fixture
def openai_server(api_key):
    """A running server that accepts only `api_key`; inject faults with `openai_server.inject(...)`."""
    with OpenAIServer(api_key=api_key) as server:
        yield server


@pytest.fixture
def endpoint(openai_server):
    """An endpoint config (schema `definitions.endpoint`) pointing at the server, with fast retries."""
    return {
        "model": "gpt-4",
        "base_url": openai_server.base_url,
        "max_concurrency": 4,
        "max_retries": 3,
        "timeout_s": 5.0,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "temperature": 0,
        "max_tokens": 256,
        "price_input_per_1k": 0.03,
        "price_output_per_1k": 0.06,
        "max_requests": None,
        "max_usd": None,
        "batch": False,
        "batch_poll_s": 0.05,
        "batch_timeout_s": 30.0,
    }


@pytest.fixture(scope="session")
def finished_test_run(tmp_path_factory):
    """The .test config run to the end once per session, in a copy of the checkout that tests may
    edit (workdir = checkout). Tests that change files work on `fresh_copy_of_finished_run`."""
    workdir = tmp_path_factory.mktemp("finished_test_run")
    copy_checkout(workdir)
    shutil.copy(TEST_CONFIG, workdir / "config.yaml")
    snakemake(workdir, snakefile=workdir / "Snakefile")
    return workdir


@pytest.fixture
def fresh_copy_of_finished_run(finished_test_run, tmp_path):
    """A private copy of the finished run (results, metadata and code), for tests that edit it."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_test_run, workdir, symlinks=True)
    return workdir

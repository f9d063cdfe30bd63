"""inscl.core.llm against the real local OpenAI-compatible server, through the real openai client."""

import json
import time
from pathlib import Path

import httpx2
import openai
import pytest
from openai_server import CHAT_PATH

from inscl.core.config import ConfigError
from inscl.core.llm import ApiError, response_cache_path, retry_delay, run_chat_requests, summarize
from inscl.instructions.tag import parse_tags

pytestmark = pytest.mark.timeout(60)


def requests_for(words):
    return [(word, [{"role": "user", "content": f"Tag this query.\n\n{word}"}]) for word in words]


def cached_keys(cache_dir) -> set[str]:
    return {
        json.loads(p.read_text())["key"] for p in Path(cache_dir, "api").rglob("*.json") if "batches" not in p.parts
    }


def test_answers_are_parsed_cached_and_not_paid_twice(openai_server, endpoint, tmp_path):
    reqs = requests_for(["translate", "summarize", "classify"])
    first = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert [r.status for r in first] == ["ok"] * 3
    assert [r.key for r in first] == ["translate", "summarize", "classify"]
    assert first[0].parsed[0]["tag"] == "translate"
    assert all(r.requests == 1 and not r.cached and r.prompt_tokens > 0 and r.cost_usd > 0 for r in first)
    assert openai_server.count() == 3
    assert cached_keys(tmp_path) == {"translate", "summarize", "classify"}

    second = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert openai_server.count() == 3
    assert all(r.cached and r.requests == 0 for r in second)
    assert [r.parsed for r in second] == [r.parsed for r in first]
    assert [r.cost_usd for r in second] == [r.cost_usd for r in first]
    totals = summarize(second)
    assert totals["paid_requests_run"] == 0 and totals["cost_usd_run"] == 0
    assert totals["cost_usd_recorded"] == pytest.approx(sum(r.cost_usd for r in first), abs=1e-6)


def test_cache_is_keyed_by_model_and_prompt_version(openai_server, endpoint, tmp_path):
    reqs = requests_for(["translate"])
    run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    run_chat_requests(reqs, endpoint, tmp_path, "v2", validate=parse_tags)
    run_chat_requests(reqs, {**endpoint, "model": "other-model"}, tmp_path, "v1", validate=parse_tags)
    assert openai_server.count() == 3
    # temperature and max_tokens are not part of the key: a config change never pays twice
    run_chat_requests(reqs, {**endpoint, "temperature": 0.7, "max_tokens": 99}, tmp_path, "v1", validate=parse_tags)
    assert openai_server.count() == 3
    assert response_cache_path(tmp_path, "gpt-4", "v1", "translate").exists()


def test_duplicate_keys_are_sent_once(openai_server, endpoint, tmp_path):
    reqs = requests_for(["translate", "translate", "classify"])
    results = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert len(results) == 3 and results[0].parsed == results[1].parsed
    assert openai_server.count() == 2


@pytest.mark.parametrize(
    "fault, paid_requests, http_requests",
    [
        ("rate_limit", 1, 2),
        ("server_error", 1, 2),
        ("timeout", 1, 2),
        ("invalid_json", 2, 2),  # one repair request
        ("truncated", 2, 2),  # one repair request
        ("prose", 1, 1),  # parsed despite the prose
        ("fenced", 1, 1),
    ],
)
def test_each_fault_succeeds_after_retry_or_repair(
    openai_server, endpoint, tmp_path, fault, paid_requests, http_requests
):
    openai_server.inject(fault, match="summarize", retry_after=0.1, hang_s=3.0)
    endpoint = {**endpoint, "timeout_s": 1.0}
    results = run_chat_requests(requests_for(["translate", "summarize"]), endpoint, tmp_path, "v1", validate=parse_tags)
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[1].parsed[0]["tag"] == "summarize" or fault in {"invalid_json", "truncated"}
    assert results[1].requests == paid_requests
    assert openai_server.count() == 1 + http_requests


def test_persistent_failures_are_recorded_per_request_and_retried_on_rerun(openai_server, endpoint, tmp_path):
    openai_server.inject("server_error", times=100, match="summarize")
    reqs = requests_for(["translate", "summarize", "classify"])
    results = run_chat_requests(reqs, {**endpoint, "max_retries": 2}, tmp_path, "v1", validate=parse_tags)
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert "HTTP 500 after 3 attempts" in results[1].error
    assert openai_server.count() == 2 + 3
    assert cached_keys(tmp_path) == {"translate", "classify"}  # nothing was paid for the failure

    openai_server.reset()
    rerun = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert [r.status for r in rerun] == ["ok", "ok", "ok"]
    assert openai_server.count() == 1
    assert openai_server.chat_messages()[0][0]["content"].endswith("summarize")


def test_invalid_twice_is_a_recorded_failure_with_raw_text_and_kept(openai_server, endpoint, tmp_path):
    openai_server.inject("invalid_json", times=2, match="summarize")
    reqs = requests_for(["summarize"])
    [result] = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert result.status == "failed" and result.requests == 2
    assert "invalid answer after 1 repair" in result.error
    assert "I would describe this query" in result.raw
    assert result.cost_usd > 0  # both paid answers are accounted
    # the paid answers are kept: a rerun does not ask again
    [again] = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    assert again.status == "failed" and again.cached and openai_server.count() == 2


def test_repair_request_shows_the_model_its_bad_answer(openai_server, endpoint, tmp_path):
    openai_server.inject("truncated", match="summarize")
    run_chat_requests(requests_for(["summarize"]), endpoint, tmp_path, "v1", validate=parse_tags)
    repair = openai_server.chat_messages()[1]
    assert repair[0] == {"role": "user", "content": "Tag this query.\n\nsummarize"}
    assert repair[1]["role"] == "assistant" and repair[1]["content"].startswith('[{"tag"')
    assert "truncated" in repair[2]["content"]


def test_retry_after_header_is_honoured(openai_server, endpoint, tmp_path):
    openai_server.inject("rate_limit", retry_after=1)
    start = time.monotonic()
    [result] = run_chat_requests(requests_for(["translate"]), endpoint, tmp_path, "v1", validate=parse_tags)
    assert result.status == "ok"
    assert time.monotonic() - start >= 1.0  # backoff alone would wait at most 0.05 s


def _status_error(status, headers):
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return openai.APIStatusError("error", response=httpx2.Response(status, headers=headers, request=request), body=None)


def test_retry_delay_prefers_server_headers_then_backoff_with_jitter():
    endpoint = {"backoff_base_s": 1.0, "backoff_max_s": 5.0}
    assert retry_delay(_status_error(429, {"retry-after-ms": "250"}), 0, endpoint, 1) == 0.25
    assert retry_delay(_status_error(429, {"retry-after": "3"}), 0, endpoint, 1) == 3.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_delay(_status_error(429, {"retry-after": date}), 0, endpoint, 1) <= 30
    delays = [
        retry_delay(_status_error(500, {}), attempt, endpoint, seed) for attempt in range(5) for seed in range(20)
    ]
    for attempt in range(5):
        chunk = delays[attempt * 20 : attempt * 20 + 20]
        cap = min(5.0, 2**attempt)
        assert all(cap * 0.5 <= d <= cap for d in chunk)
        assert len(set(chunk)) > 1  # jitter
    assert retry_delay(_status_error(500, {}), 2, endpoint, 7) == retry_delay(_status_error(500, {}), 2, endpoint, 7)


def test_concurrency_is_bounded(openai_server, endpoint, tmp_path):
    openai_server.latency_s = 0.2
    words = [f"word{chr(97 + i)}" for i in range(12)]
    results = run_chat_requests(
        requests_for(words), {**endpoint, "max_concurrency": 3}, tmp_path, "v1", validate=parse_tags
    )
    assert all(r.status == "ok" for r in results)
    assert openai_server.max_in_flight == 3


def test_request_budget_stops_cleanly_and_keeps_the_cache(openai_server, endpoint, tmp_path):
    words = [f"word{chr(97 + i)}" for i in range(10)]
    results = run_chat_requests(
        requests_for(words), {**endpoint, "max_requests": 3, "max_concurrency": 2}, tmp_path, "v1", validate=parse_tags
    )
    assert sum(r.status == "ok" for r in results) == 3
    assert sum(r.status == "skipped_budget" for r in results) == 7
    assert openai_server.count() == 3 and len(cached_keys(tmp_path)) == 3
    rerun = run_chat_requests(requests_for(words), endpoint, tmp_path, "v1", validate=parse_tags)
    assert all(r.status == "ok" for r in rerun)
    assert openai_server.count() == 10


def test_cost_budget_stops_before_exceeding(openai_server, endpoint, tmp_path):
    words = [f"word{chr(97 + i)}" for i in range(10)]
    [probe] = run_chat_requests(requests_for(["probe"]), endpoint, tmp_path / "probe", "v1", validate=parse_tags)
    cap = probe.cost_usd * 3.5
    limited = {**endpoint, "max_usd": cap, "max_concurrency": 1, "max_tokens": 16}
    results = run_chat_requests(requests_for(words), limited, tmp_path, "v1", validate=parse_tags)
    ok = [r for r in results if r.status == "ok"]
    assert 1 <= len(ok) <= 3
    assert sum(r.cost_usd for r in ok) <= cap
    assert all(r.status == "skipped_budget" for r in results if r.status != "ok")


def test_missing_key_is_a_clear_error_unless_everything_is_cached(openai_server, endpoint, tmp_path, monkeypatch):
    reqs = requests_for(["translate"])
    run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)
    monkeypatch.delenv("OPENAI_API_KEY")
    assert run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)[0].status == "ok"
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        run_chat_requests(requests_for(["classify"]), endpoint, tmp_path, "v1", validate=parse_tags)


def test_refused_key_stops_the_run_without_revealing_it(openai_server, endpoint, tmp_path, monkeypatch):
    wrong = "sk-wrong-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", wrong)
    with pytest.raises(ApiError, match="refused the API key") as error:
        run_chat_requests(requests_for(["translate", "classify"]), endpoint, tmp_path, "v1", validate=parse_tags)
    assert wrong not in str(error.value)
    assert openai_server.count(status=401) >= 1


def test_key_is_never_written_to_the_cache(openai_server, endpoint, tmp_path, api_key):
    openai_server.inject("invalid_json", times=2, match="classify")
    openai_server.inject("server_error", times=10, match="summarize")
    run_chat_requests(
        requests_for(["translate", "classify", "summarize"]), endpoint, tmp_path, "v1", validate=parse_tags
    )
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(api_key in p.read_text(errors="replace") for p in files)


def test_batch_mode_feeds_the_same_cache(openai_server, endpoint, tmp_path):
    openai_server.inject("invalid_json", match="summarize")
    reqs = requests_for(["translate", "summarize", "classify"])
    batch = {**endpoint, "batch": True}
    results = run_chat_requests(reqs, batch, tmp_path, "v1", validate=parse_tags)
    assert [r.status for r in results] == ["ok"] * 3
    assert results[1].requests == 2  # the repair went through a second batch
    assert openai_server.count() == 0  # no synchronous requests
    assert openai_server.count(CHAT_PATH + "#batch") == 4
    assert openai_server.count("/v1/batches") == 2 and openai_server.count("/v1/files") == 2
    sync = {**endpoint, "price_input_per_1k": 0.03}
    assert results[0].cost_usd == pytest.approx(
        0.5
        * (
            results[0].prompt_tokens * sync["price_input_per_1k"]
            + results[0].completion_tokens * sync["price_output_per_1k"]
        )
        / 1000
    )
    again = run_chat_requests(reqs, endpoint, tmp_path, "v1", validate=parse_tags)  # answered by the batch's cache
    assert all(r.cached for r in again) and openai_server.count() == 0


def test_batch_left_running_is_resumed_not_paid_twice(api_key, endpoint, tmp_path):
    from openai_server import OpenAIServer

    with OpenAIServer(api_key=api_key, batch_delay_s=1.5) as server:
        slow = {**endpoint, "base_url": server.base_url, "batch": True, "batch_timeout_s": 0.2}
        reqs = requests_for(["translate", "classify"])
        with pytest.raises(ApiError, match="rerun to resume"):
            run_chat_requests(reqs, slow, tmp_path, "v1", validate=parse_tags)
        results = run_chat_requests(reqs, {**slow, "batch_timeout_s": 30}, tmp_path, "v1", validate=parse_tags)
        assert [r.status for r in results] == ["ok", "ok"]
        assert server.count("/v1/batches") == 1 and server.count("/v1/files") == 1
        assert server.count(CHAT_PATH + "#batch") == 2

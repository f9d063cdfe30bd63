from types import SimpleNamespace

import pytest

from inscl.core.io import InputError
from inscl.core.rule import run_rule


def rule_context(tmp_path):
    return SimpleNamespace(log=[str(tmp_path / "logs" / "rule.log")], threads=1)


def test_input_error_exits_with_one_line(tmp_path, capsys):
    def main(smk):
        raise InputError("data/a.json", "must not be empty", record=2, field="output")

    with pytest.raises(SystemExit) as info:
        run_rule(rule_context(tmp_path), main)
    assert info.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("inscl error:")]
    assert lines == ["inscl error: data/a.json: record 2: field 'output': must not be empty"]
    assert "must not be empty" in (tmp_path / "logs" / "rule.log").read_text()


def test_unexpected_errors_keep_their_traceback_in_the_log(tmp_path):
    def main(smk):
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run_rule(rule_context(tmp_path), main)
    assert "Traceback" in (tmp_path / "logs" / "rule.log").read_text()


def test_main_runs_with_the_rule_context(tmp_path):
    seen = {}
    run_rule(rule_context(tmp_path), lambda smk: seen.setdefault("threads", smk.threads))
    assert seen == {"threads": 1}

import pytest

from inscl.core.hashing import content_hash, stable_seed
from inscl.core.io import InputError, atomic_path, read_json


def test_input_error_is_one_line_naming_file_record_field():
    error = InputError("data/x.json", "missing", record=3, field="output")
    assert str(error) == "data/x.json: record 3: field 'output': missing"


def test_content_hash_is_stable_and_distinguishes_texts():
    assert content_hash("Classify the sentiment.") == content_hash("Classify the sentiment.")
    assert content_hash("a") != content_hash("b")
    assert len(content_hash("a")) == 16


def test_stable_seed_depends_on_every_part():
    assert stable_seed(0, "demo", "inscl", 2) == stable_seed(0, "demo", "inscl", 2)
    assert stable_seed(0, "demo", "inscl", 2) != stable_seed(0, "demo", "inscl", 3)
    assert stable_seed("ab", "c") != stable_seed("a", "bc")
    assert 0 <= stable_seed("x") < 2**63


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_read_json_names_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]')
    with pytest.raises(InputError) as info:
        read_json(path)
    assert str(info.value).startswith(f"{path}: malformed JSON at line 3 column")


def test_non_utf8_names_byte_offset(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[{"a": "caf\xe9"}]')
    with pytest.raises(InputError) as info:
        read_json(path)
    assert "not valid UTF-8 (byte 11, line 1)" in str(info.value)

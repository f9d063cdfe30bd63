import pytest
from training_support import superni_instances

from inscl.core.prompts import build_prompt, encode_prompt
from inscl.training.base_model import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    rows = superni_instances()
    return train_tokenizer(rows["instruction"].tolist() + rows["input"].tolist(), 400, 256)


def test_plain_template_has_instruction_input_and_response_marker():
    prompt = build_prompt("Add the numbers.", "3 + 4")
    assert prompt == "### Instruction:\nAdd the numbers.\n\n### Input:\n3 + 4\n\n### Response:\n"


def test_plain_template_omits_an_empty_input_section():
    prompt = build_prompt("Write a haiku.", "  ")
    assert prompt == "### Instruction:\nWrite a haiku.\n\n### Response:\n"
    assert "Input" not in prompt


def test_chat_template_renders_the_user_message_and_generation_prompt(tokenizer):
    prompt = build_prompt("Add the numbers.", "3 + 4", "chat", tokenizer)
    assert prompt == "<s><|user|>\nAdd the numbers.\n\n3 + 4\n<|assistant|>\n"


def test_chat_template_without_input(tokenizer):
    assert build_prompt("Say hi.", "", "chat", tokenizer) == "<s><|user|>\nSay hi.\n<|assistant|>\n"


def test_chat_template_needs_a_tokenizer_with_one(tokenizer):
    with pytest.raises(ValueError, match="needs the tokenizer"):
        build_prompt("a", "b", "chat")
    tokenizer_without = train_tokenizer(["plain text only"], 300, 64)
    tokenizer_without.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt("a", "b", "chat", tokenizer_without)


def test_unknown_template_is_rejected():
    with pytest.raises(ValueError, match="unknown prompt template"):
        build_prompt("a", "b", "alpaca")


def test_encode_prompt_adds_bos_exactly_once(tokenizer):
    plain = encode_prompt(tokenizer, build_prompt("Add.", "1 2"))
    chat = encode_prompt(tokenizer, build_prompt("Add.", "1 2", "chat", tokenizer))
    for ids in (plain, chat):
        assert ids[0] == tokenizer.bos_token_id
        assert ids.count(tokenizer.bos_token_id) == 1

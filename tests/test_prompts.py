import pytest
from training_support import superni_instances

from inscl.core.prompts import TEMPLATES, build_prompt, encode_prompt
from inscl.training.base_model import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    rows = superni_instances()
    return train_tokenizer(rows["instruction"].tolist() + rows["input"].tolist(), 400, 256)


def test_raw_template_is_the_source_prompt():
    # A real TRACE FOMC prompt (../shared/data/trace/examples/dataset_examples.txt) as ingestion splits it.
    instruction = (
        "What is the monetary policy stance for the following text? Please answer 'dovish', 'hawkish' or 'neutral'."
    )
    text = "Text:\nDuring the past several years, workers across the wage distribution have seen increases.\nStance:"
    assert build_prompt(instruction, text, "raw") == instruction + "\n" + text
    assert build_prompt("Continue writing the code.", "", "raw") == "Continue writing the code."


def test_inscl_template_is_definition_blank_line_input_blank_line():
    # InsCL utils.py:55-56 builds "Definition\n\ninput" and train_CL.py:29-33 formats "{instruction}\n\n{input}" with "".
    prompt = build_prompt("Add the numbers.", "3 + 4", "inscl")
    assert prompt == "Add the numbers.\n\n3 + 4\n\n"


def test_alpaca_template_has_instruction_input_and_response_marker():
    prompt = build_prompt("Add the numbers.", "3 + 4", "alpaca")
    assert prompt == "### Instruction:\nAdd the numbers.\n\n### Input:\n3 + 4\n\n### Response:\n"
    assert build_prompt("Add the numbers.", "3 + 4") == prompt  # the default


def test_alpaca_template_omits_an_empty_input_section():
    prompt = build_prompt("Write a haiku.", "  ", "alpaca")
    assert prompt == "### Instruction:\nWrite a haiku.\n\n### Response:\n"


def test_chat_template_renders_the_user_message_and_generation_prompt(tokenizer):
    prompt = build_prompt("Add the numbers.", "3 + 4", "chat", tokenizer)
    assert prompt == "<s><|user|>\nAdd the numbers.\n\n3 + 4\n<|assistant|>\n"
    assert build_prompt("Say hi.", "", "chat", tokenizer) == "<s><|user|>\nSay hi.\n<|assistant|>\n"


def test_chat_template_needs_a_tokenizer_with_one(tokenizer):
    with pytest.raises(ValueError, match="needs the tokenizer"):
        build_prompt("a", "b", "chat")
    tokenizer_without = train_tokenizer(["plain text only"], 300, 64)
    tokenizer_without.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        build_prompt("a", "b", "chat", tokenizer_without)


def test_unknown_template_is_rejected():
    with pytest.raises(ValueError, match="unknown prompt template 'plain'"):
        build_prompt("a", "b", "plain")


@pytest.mark.parametrize("template", TEMPLATES)
def test_encode_prompt_adds_bos_exactly_once(tokenizer, template):
    ids = encode_prompt(tokenizer, build_prompt("Add.", "1 2", template, tokenizer))
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1

"""Prompt templates shared by training and generation: the text up to where the answer starts."""

from __future__ import annotations

TEMPLATES = ("plain", "chat")

PLAIN_INSTRUCTION = "### Instruction:\n{instruction}\n\n"
PLAIN_INPUT = "### Input:\n{input}\n\n"
PLAIN_RESPONSE = "### Response:\n"


def build_prompt(instruction: str, input: str, template: str = "plain", tokenizer=None) -> str:
    """The prompt text; the model's answer follows it directly.

    plain: instruction, input (section left out when empty) and a response marker.
    chat: the tokenizer's chat template, the user message being instruction and input, with the
    generation prompt added.
    """
    instruction = (instruction or "").strip()
    input = (input or "").strip()
    if template == "plain":
        text = PLAIN_INSTRUCTION.format(instruction=instruction)
        if input:
            text += PLAIN_INPUT.format(input=input)
        return text + PLAIN_RESPONSE
    if template == "chat":
        if tokenizer is None:
            raise ValueError("the chat template needs the tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"training.template is 'chat' but the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} "
                "has no chat template; use template: plain"
            )
        message = instruction if not input else f"{instruction}\n\n{input}"
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": message}], tokenize=False, add_generation_prompt=True
        )
    raise ValueError(f"unknown prompt template {template!r}; expected one of {TEMPLATES}")


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a prompt exactly as training saw them.

    Special tokens (BOS) are added unless the text already starts with the BOS token, as a
    chat template's output does.
    """
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and prompt.startswith(bos))
    return list(tokenizer(prompt, add_special_tokens=add_special)["input_ids"])

"""Prompt templates shared by training and generation: the text up to where the answer starts.

The template is `training.template`; generation builds its prompts with the same one.

- raw: the instruction and its input as the source wrote them, joined by the line break the
  ingestion split them at (TRACE feeds `prompt` as is; utils/data/data_collator.py:79);
- inscl: InsCL's `"{instruction}\\n\\n{input}"` filled with `instruction = Definition + "\\n\\n" +
  input` and an empty input (InsCL utils.py:55-56, train_CL.py:29-33,185), i.e. the instruction, a
  blank line, the input and a blank line;
- alpaca: `### Instruction:` / `### Input:` (left out when empty) / `### Response:`;
- chat: the tokenizer's chat template, the user message being the instruction and input.

Token ids start with one BOS (`encode_prompt`); the answer and EOS follow in training.
"""

from __future__ import annotations

TEMPLATES = ("raw", "inscl", "alpaca", "chat")

ALPACA_INSTRUCTION = "### Instruction:\n{instruction}\n\n"
ALPACA_INPUT = "### Input:\n{input}\n\n"
ALPACA_RESPONSE = "### Response:\n"
INSCL = "{instruction}\n\n{input}\n\n"


def build_prompt(instruction: str, input: str, template: str = "alpaca", tokenizer=None) -> str:
    """The prompt text; the model's answer follows it directly."""
    instruction, input = instruction or "", input or ""
    if template == "raw":
        return f"{instruction}\n{input}" if input else instruction
    if template == "inscl":
        return INSCL.format(instruction=instruction, input=input)
    if template == "alpaca":
        text = ALPACA_INSTRUCTION.format(instruction=instruction.strip())
        if input.strip():
            text += ALPACA_INPUT.format(input=input.strip())
        return text + ALPACA_RESPONSE
    if template == "chat":
        if tokenizer is None:
            raise ValueError("the chat template needs the tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"training.template is 'chat' but the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} "
                "has no chat template; use template: alpaca"
            )
        message = instruction.strip() if not input.strip() else f"{instruction.strip()}\n\n{input.strip()}"
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

"""Rule base_model: the tiny LLaMA and its BPE tokenizer built locally, or a reference to a local
Hugging Face model (its weights are never copied)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import torch

from inscl.core.io import InputError, atomic_dir
from inscl.core.prompts import build_prompt
from inscl.training.models import BASE_REFERENCE, ModelNotAvailable, load_tokenizer

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# A minimal chat format for the tiny tokenizer, so `training.template: chat` also runs offline.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int):
    """A byte-level BPE tokenizer trained on `texts`, wrapped as a PreTrainedTokenizerFast.

    Prompts get a BOS token; every byte is representable, so no text is ever unknown.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **SPECIAL_TOKENS)
    wrapped.chat_template = TINY_CHAT_TEMPLATE
    return wrapped


def tiny_llama_config(tiny: dict, tokenizer):
    from transformers import LlamaConfig

    if tiny["hidden_size"] % tiny["heads"]:
        raise InputError("config", "hidden_size must be divisible by heads", field="model.tiny.heads")
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=tiny["hidden_size"],
        intermediate_size=tiny["intermediate_size"],
        num_hidden_layers=tiny["layers"],
        num_attention_heads=tiny["heads"],
        num_key_value_heads=tiny["heads"],
        max_position_embeddings=tiny["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def build_tiny_model(tiny: dict, tokenizer):
    """A randomly initialised LLaMA-architecture model, identical for the same config and seed."""
    from transformers import LlamaForCausalLM

    config = tiny_llama_config(tiny, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(tiny.get("seed", 0)))
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def tokenizer_corpus(instances) -> list[str]:
    """Texts the tiny tokenizer learns from: the training split's prompts (alpaca template) and answers."""
    rows = instances[instances["split"] == "train"] if (instances["split"] == "train").any() else instances
    texts = [build_prompt(i, x) for i, x in zip(rows["instruction"].fillna(""), rows["input"].fillna(""))]
    texts += [str(ref) for refs in rows["output"] for ref in refs]
    return [t for t in texts if t]


def locate_pretrained(name_or_path: str) -> dict:
    """Where a Hugging Face model lives on this machine, without downloading anything."""
    if os.path.isdir(name_or_path):
        path = os.path.abspath(name_or_path)
        if not os.path.exists(os.path.join(path, "config.json")):
            raise ModelNotAvailable(path, "not a Hugging Face model folder (no config.json)", field="model.base")
        return {"source": name_or_path, "path": path}
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(name_or_path, local_files_only=True)
    except Exception as error:  # LocalEntryNotFoundError, or a malformed repo id
        cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        raise ModelNotAvailable(
            "config",
            f"model {name_or_path!r} is not in the local Hugging Face cache ({cache}) and nothing is downloaded "
            f"at run time; fetch it first (`hf download {name_or_path}`) or give a local path "
            f"({type(error).__name__})",
            field="model.base",
        ) from None
    return {"source": name_or_path, "path": path}


def build_base_model(model_cfg: dict, instances, out_dir) -> None:
    """Write the base model folder: the tiny model and tokenizer, or a reference to a local HF model."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        if model_cfg["base"] == "tiny":
            tiny = model_cfg["tiny"]
            corpus = tokenizer_corpus(instances)
            if not corpus:
                raise InputError("instances.parquet", "no text to train the tokenizer on")
            tokenizer = train_tokenizer(corpus, tiny["vocab_size"], tiny["max_position_embeddings"])
            model = build_tiny_model(tiny, tokenizer)
            log.info("tiny LLaMA: %d parameters, vocabulary %d", model.num_parameters(), len(tokenizer))
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        else:
            reference = locate_pretrained(model_cfg["base"])
            # Loading the config and tokenizer proves the reference works without reading the weights.
            load_tokenizer(reference["path"], model_cfg)
            from transformers import AutoConfig

            AutoConfig.from_pretrained(
                reference["path"], local_files_only=True, trust_remote_code=model_cfg["trust_remote_code"]
            )
            (tmp / BASE_REFERENCE).write_text(json.dumps(reference, indent=2) + "\n")
            log.info("base model %s -> %s (referenced, not copied)", reference["source"], reference["path"])

"""The training loss: summed cross-entropy over answer tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inscl.training.examples import IGNORE_INDEX
from inscl.training.models import causal_lm


def answer_logits(model, input_ids, labels, position_ids, attention_mask=None, **attention):
    """(logits, targets) at the answer positions only: prompt tokens cost no vocabulary projection.
    `attention` holds the kernel's extra inputs of a packed row (inscl.training.attention.forward_kwargs)."""
    lm = causal_lm(model)
    hidden = lm.get_decoder()(
        input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False, **attention
    ).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    return lm.get_output_embeddings()(hidden[:, :-1][keep]).float(), targets[keep]


class AnswerLoss(torch.nn.Module):
    """Summed cross-entropy over answer tokens. With `keep_logits` (a method that reads them, e.g. LwF)
    the answer logits of the last forward stay in `logits`."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.keep_logits = False
        self.logits = None

    def forward(self, input_ids, labels, position_ids, attention_mask=None, **attention):
        logits, targets = answer_logits(self.model, input_ids, labels, position_ids, attention_mask, **attention)
        self.logits = logits if self.keep_logits else None
        return F.cross_entropy(logits, targets, reduction="sum")

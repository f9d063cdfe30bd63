"""The training loss: summed cross-entropy over answer tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from inscl.training.examples import IGNORE_INDEX
from inscl.training.models import causal_lm


class AnswerLoss(torch.nn.Module):
    """Summed cross-entropy over answer tokens. Only positions with a label reach the LM head,
    so prompt tokens cost no vocabulary projection. `attention` holds the kernel's extra inputs
    of a packed row (inscl.training.attention.forward_kwargs)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, position_ids, attention_mask=None, **attention):
        lm = causal_lm(self.model)
        hidden = lm.get_decoder()(
            input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False, **attention
        ).last_hidden_state
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        return F.cross_entropy(logits, targets[keep], reduction="sum")

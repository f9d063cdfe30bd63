"""Learning without Forgetting (Li & Hoiem 2017, TPAMI, Eq. 2), for a language model.

    L = L_new(Y_n, Ŷ_n) + λ_o · L_old(Y_o, Ŷ_o),   L_old = −Σ y'_o log ŷ'_o,
    y'_o = softmax(teacher / T),  ŷ'_o = softmax(student / T)

The teacher is the previous stage's model, frozen; the inputs are the current stage's examples; the
outputs are the next-token distributions at the answer tokens. The term used is
KL(y'_o ‖ ŷ'_o) summed over answer tokens: the cross-entropy above minus the teacher's entropy, the
same gradient, and zero when the two models agree. T = 2 and λ_o = 1 as the paper's code
(distillation_temp, keep_response_lambda: snippets/PASCALkeeporig.m:27,32), without a T² factor, as
both the paper and TRACE (model/Regular/LwF.py:86). Unlike TRACE, which caches the teacher's logits
by step before training (LwF.py:38-49) and passes KL's arguments the other way round (LwF.py:32-34),
the teacher runs beside the student on each micro-batch. Stage 1 has no earlier task: no term.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from inscl.training.loss import answer_logits
from inscl.training.methods.base import TrainingMethod
from inscl.training.models import DTYPES, is_adapter, load_causal_lm, resolve_model_path


class LwF(TrainingMethod):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.teacher = None

    def setup(self, trainer) -> None:
        """The previous stage's model as the frozen teacher (none at stage 1, which starts from the base)."""
        job = trainer.job
        if Path(resolve_model_path(job.previous)).resolve() == Path(resolve_model_path(job.base)).resolve():
            return
        self.temperature, self.weight = (
            float(self.settings["lwf"]["temperature"]),
            float(self.settings["lwf"]["weight"]),
        )
        dtype = DTYPES[trainer.training["master_weights"]]
        if is_adapter(job.previous):
            from peft import PeftModel

            base = load_causal_lm(job.base, job.model, dtype, trainer.kernel, trainer.device)
            teacher = PeftModel.from_pretrained(base, job.previous).merge_and_unload()
        else:
            teacher = load_causal_lm(job.previous, job.model, dtype, trainer.kernel, trainer.device)
        self.teacher = teacher.to(trainer.device).eval().requires_grad_(False)
        trainer.loss_module.keep_logits = True

    def extra_loss(self, trainer, inputs: dict) -> torch.Tensor | None:
        """λ_o · Σ_answer tokens KL(softmax(teacher/T) ‖ softmax(student/T))."""
        if self.teacher is None:
            return None
        with torch.no_grad(), trainer.autocast():
            teacher, _ = answer_logits(self.teacher, **inputs)
        student = trainer.loss_module.logits
        t = self.temperature
        kl = F.kl_div(
            F.log_softmax(student / t, -1), F.log_softmax(teacher.float() / t, -1), log_target=True, reduction="sum"
        )
        return self.weight * kl

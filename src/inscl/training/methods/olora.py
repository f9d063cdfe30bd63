"""Orthogonal subspace learning for language-model continual learning (O-LoRA; Wang et al. 2023,
EMNLP Findings, Eq. 5-7).

Each task t trains a new LoRA adapter (A_t, B_t) on the frozen base; the adapters of earlier tasks stay
frozen and keep acting: h = W₀x + Σ_{i≤t} B_i A_i x · α/r. The loss of task t is

    L = L_task + λ1 · Σ_layers Σ_{j,k} |(A_earlier · A_tᵀ)_{j,k}| + λ2 · Σ ‖current adapter tensor‖₂

with A_earlier the earlier A's stacked along the rank (official code: cmnfriend/O-LoRA
src/uie_trainer_lora.py:91-109: the L2 term is the Frobenius norm of each current tensor, not
squared). λ1 = 0.5, λ2 = 0, r = 8, α = 32, dropout 0.1 on q_proj and v_proj (run_uie_lora.py:115-116,
240-241, 380-395; src/peft/utils/other.py:202).

The stage's model folder is one PEFT adapter holding every adapter so far stacked along the rank
(A's along dim 0, B's along dim 1, rank r·t and alpha α·t so that each keeps its scaling α/r), as
upstream saves it (src/peft/utils/save_and_load.py:36-50): the evaluated model is the base plus all
adapters, with no task id, and the next stage loads it as the frozen "earlier" adapter.
"""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from inscl.core.io import atomic_dir
from inscl.training.methods.base import TrainingMethod
from inscl.training.models import DTYPES, compute_dtype, is_adapter, load_causal_lm, resolve_model_path, save_dtype

EARLIER, CURRENT = "earlier", "current"


class OLoRA(TrainingMethod):
    def __init__(self, settings: dict):
        super().__init__(settings)
        self.olora = settings["olora"]
        self.orthogonality: list[float] = []  # the orthogonality term at each step

    def adapter_config(self, tasks: int = 1):
        from peft import LoraConfig

        o = self.olora
        return LoraConfig(
            r=o["r"] * tasks,
            lora_alpha=o["alpha"] * tasks,
            lora_dropout=o["dropout"],
            target_modules=list(o["target_modules"]),
            task_type="CAUSAL_LM",
        )

    def load_model(self, trainer):
        """The base with the earlier tasks' adapter (frozen) and a new one for this task (trained)."""
        from peft import PeftModel, get_peft_model

        job, device = trainer.job, trainer.device
        master = DTYPES[trainer.training["master_weights"]]
        compute = compute_dtype(trainer.training["precision"], device)
        frozen = compute if device.type == "cuda" and compute else master
        if is_adapter(job.previous):
            base = load_causal_lm(job.base, job.model, frozen, trainer.kernel, device)
            model = PeftModel.from_pretrained(base, job.previous, adapter_name=EARLIER)
            model.add_adapter(CURRENT, self.adapter_config())
            model.base_model.set_adapter([EARLIER, CURRENT])
        else:
            base = load_causal_lm(job.previous, job.model, frozen, trainer.kernel, device)
            model = get_peft_model(base, self.adapter_config(), adapter_name=CURRENT)
        for name, p in model.named_parameters():
            p.requires_grad_(f".{CURRENT}." in name)
            if p.requires_grad:
                p.data = p.data.to(master)
        return model.to(device)

    def pairs(self, model):
        """(A_earlier, A_current) of every adapted layer that has both."""
        for module in model.modules():
            lora_a = getattr(module, "lora_A", None)
            if isinstance(lora_a, torch.nn.ModuleDict) and EARLIER in lora_a and CURRENT in lora_a:
                yield lora_a[EARLIER].weight, lora_a[CURRENT].weight

    def penalty(self, trainer) -> torch.Tensor | None:
        """λ1 · Σ |A_earlier A_currentᵀ| + λ2 · Σ ‖current tensor‖₂."""
        model = trainer.model
        terms = [(earlier.float() @ current.float().T).abs().sum() for earlier, current in self.pairs(model)]
        orthogonality = torch.stack(terms).sum() if terms else None
        if orthogonality is not None:
            self.orthogonality.append(float(orthogonality.detach()))
        l2 = torch.stack([p.float().norm() for n, p in model.named_parameters() if f".{CURRENT}." in n]).sum()
        total = self.olora["lambda2"] * l2
        return total if orthogonality is None else total + self.olora["lambda1"] * orthogonality

    def save_model(self, trainer) -> bool:
        """Every adapter so far, stacked into one (see the module docstring)."""
        from peft.utils import get_peft_model_state_dict

        if not trainer.ranks.is_main:
            return True
        job, model = trainer.job, trainer.model
        dtype = save_dtype(job.training, job.base)
        weights = get_peft_model_state_dict(model, adapter_name=CURRENT)
        tasks = 1
        if EARLIER in model.peft_config:
            earlier = get_peft_model_state_dict(model, adapter_name=EARLIER)
            tasks += model.peft_config[EARLIER].r // self.olora["r"]
            weights = {k: torch.cat([earlier[k], w], dim=0 if "lora_A" in k else 1) for k, w in weights.items()}
        config = self.adapter_config(tasks)
        config.base_model_name_or_path = resolve_model_path(job.base)
        with atomic_dir(job.output_model) as tmp:
            config.save_pretrained(tmp)
            save_file(
                {k: w.detach().to(dtype).contiguous().cpu() for k, w in weights.items()},
                f"{tmp}/adapter_model.safetensors",
            )
            trainer.tokenizer.save_pretrained(tmp)
        return True

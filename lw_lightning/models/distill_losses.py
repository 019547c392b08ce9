"""LookWhere's what-where distillation losses (per-sample means, averaged over the batch)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cls_loss(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    """L_cls = mean_b mean_d (ĉ - c)²."""
    return F.mse_loss(student_cls.float(), teacher_cls.float())


def patch_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """L_pat = mean_b mean_j mean_d (Û_j - Z_j)² over the positions given (all N, or the kept)."""
    return F.mse_loss(student.float(), teacher.float())


def map_loss(selector_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """L_map = mean_b KL(softmax(A) ‖ softmax(s)) = Σ_j p_j (log p_j − log q_j), over N positions."""
    log_p = F.log_softmax(teacher_logits.float(), dim=-1)
    log_q = F.log_softmax(selector_logits.float(), dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)

"""distill: knowledge-distillation losses and a Distiller that taps features by module name.

Imports only torch (DESIGN.md §2); the facade ``compress.distill`` trains with it.
"""

from distill.attention import AttentionTransferLoss, attention_map
from distill.distiller import Distiller, DistillOutput
from distill.dkd import DKDLoss, dkd_terms
from distill.errors import DistillError
from distill.hint import ChannelAdapter, HintLoss
from distill.kd import KDLoss, soft_kl
from distill.relational import RKDLoss, angle_potential, distance_potential
from distill.taps import FeatureTaps

__all__ = [
    "AttentionTransferLoss",
    "ChannelAdapter",
    "DKDLoss",
    "DistillError",
    "DistillOutput",
    "Distiller",
    "FeatureTaps",
    "HintLoss",
    "KDLoss",
    "RKDLoss",
    "angle_potential",
    "attention_map",
    "distance_potential",
    "dkd_terms",
    "soft_kl",
]

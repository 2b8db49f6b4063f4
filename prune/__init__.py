"""prune: masks, importance scores, the coupled-channel dependency graph, physical
shrinking and schedules. Imports torch only (DESIGN.md §2)."""

from prune.api import prune_model
from prune.batchnorm import recalibrate_batchnorm
from prune.errors import PruneError
from prune.masks import make_permanent, prune_weights
from prune.metrics import SparsityReport, count_macs, count_params, sparsity_report
from prune.plan import ChannelGroup
from prune.schedules import sparsity_schedule
from prune.sensitivity import SensitivityReport, sensitivity_analysis
from prune.structured import dependency_groups, prune_channels

__all__ = [
    "ChannelGroup",
    "PruneError",
    "SensitivityReport",
    "SparsityReport",
    "count_macs",
    "count_params",
    "dependency_groups",
    "make_permanent",
    "prune_channels",
    "prune_model",
    "prune_weights",
    "recalibrate_batchnorm",
    "sensitivity_analysis",
    "sparsity_report",
    "sparsity_schedule",
]

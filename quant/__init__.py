"""quant: specs, observers, fake-quant (STE), graph preparation, calibration.

Imports only torch (DESIGN.md §2).
"""

from quant.calibrate import calibrate, freeze, split_batch
from quant.errors import QuantError
from quant.fake_quant import FakeQuantize, WeightFakeQuantize
from quant.modules import QuantConv2d, QuantLinear
from quant.observers import OBSERVERS, make_observer
from quant.prepare import QConfig, prepare, quantizers
from quant.qat import QATObserver, QuantConvBn2d, freeze_bn_stats, freeze_observers
from quant.spec import ACT_INT8, ACT_UINT8, WEIGHT_INT8_PER_CHANNEL, WEIGHT_INT8_PER_TENSOR, QuantSpec

__all__ = [
    "ACT_INT8", "ACT_UINT8", "OBSERVERS", "WEIGHT_INT8_PER_CHANNEL", "WEIGHT_INT8_PER_TENSOR",
    "FakeQuantize", "QATObserver", "QConfig", "QuantConv2d", "QuantConvBn2d", "QuantError", "QuantLinear",
    "QuantSpec", "WeightFakeQuantize",
    "calibrate", "freeze", "freeze_bn_stats", "freeze_observers", "make_observer", "prepare", "quantizers",
    "split_batch",
]

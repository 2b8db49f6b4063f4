"""Shared fixtures: deterministic seeds and a single torch thread (CI has 2 cores, tests run alone)."""

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield

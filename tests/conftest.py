import os

import pytest
import torch

# Tests run on 2 cores; keep torch from oversubscribing when pytest-xdist is not used.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)

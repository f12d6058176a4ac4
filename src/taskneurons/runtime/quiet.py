"""Library chatter that repeats on every evaluation, silenced where it is produced.

Lightning announces the hardware (``GPU available: False ...``) and advertises other products through
``rank_zero_info`` on its own logger, once per Trainer: the demo builds about ten Trainers. Real warnings
go through ``warnings``/``rank_zero_warn`` and are left alone; only this INFO chatter and one known
deprecation that Lightning triggers inside torch (not ours to fix, not the user's) are muted.
"""

from __future__ import annotations

import logging
import warnings

LIGHTNING_INFO_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                          "lightning_fabric.utilities.rank_zero", "pytorch_lightning.accelerators.cuda")


def quiet_libraries() -> None:
    for name in LIGHTNING_INFO_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # raised by pytorch_lightning/utilities/_pytree.py against torch >= 2.9, once per test loop
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

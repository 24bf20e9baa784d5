"""Learning algorithms on RLlib's new API stack (RLModule / Learner / ConnectorV2).

``m3fppo_config`` builds the PPOConfig of M3FPPO (spec/experiments.md §1.1–1.4, §1.10): single-agent
PPO on the batched M3FC environment with the RLlib-1.8 value clipping of the reference code.
Importing this package imports ray and torch (``import m3fmarl`` does not).
"""

from m3fmarl.algorithms.m3fppo import (
    M3FGeneralAdvantageEstimation,
    M3FPPOTorchLearner,
    M3FPPOTorchRLModule,
    m3fppo_config,
    rllib18_value_loss,
)

__all__ = [
    "M3FGeneralAdvantageEstimation",
    "M3FPPOTorchLearner",
    "M3FPPOTorchRLModule",
    "m3fppo_config",
    "rllib18_value_loss",
]

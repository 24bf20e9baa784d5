"""Learning algorithms on RLlib's new API stack (RLModule / Learner / ConnectorV2).

``m3fppo_config`` builds the PPOConfig of M3FPPO (spec/experiments.md §1.1–1.4, §1.10): single-agent
PPO on the M3FC view (:class:`M3FCAlgorithm`: RLlib's PPO sampling the batched simulator with
:class:`m3fmarl.m3fc.sampler.M3FCSampler`) with the RLlib-1.8 value clipping of the reference code.
``m3fa2c_config`` builds M3FA2C (§1.5): the same PPOConfig with an A2C learner (one sum-reduced,
gradient-clipped step on the whole batch per iteration, no advantage standardisation).
Importing this package imports ray and torch (``import m3fmarl`` does not).
"""

from m3fmarl.algorithms.m3fa2c import M3FA2CTorchLearner, m3fa2c_config
from m3fmarl.algorithms.m3fppo import (
    M3FCAlgorithm,
    M3FPPOTorchLearner,
    M3FPPOTorchRLModule,
    m3fppo_config,
    rllib18_value_loss,
)

__all__ = [
    "M3FA2CTorchLearner",
    "M3FCAlgorithm",
    "M3FPPOTorchLearner",
    "M3FPPOTorchRLModule",
    "m3fa2c_config",
    "m3fppo_config",
    "rllib18_value_loss",
]

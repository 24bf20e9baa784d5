"""M3FC view: the upper-level MDP of each problem as Gymnasium environments (spec §1.2)."""

from m3fmarl.m3fc.env import EXECUTIONS, M3FCEnv
from m3fmarl.m3fc.vector import M3FCVectorEnv

__all__ = ["EXECUTIONS", "M3FCEnv", "M3FCVectorEnv"]

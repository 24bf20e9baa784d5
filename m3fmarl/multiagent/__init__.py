"""The multi-agent view of the five problems (IPPO/MAPPO baselines): a batched core and its
PettingZoo / RLlib environments."""

from m3fmarl.multiagent.core import MAJOR_ID, MultiAgentCore, minor_id
from m3fmarl.multiagent.envs import parallel_env, register_rllib_envs, rllib_env_class, rllib_env_name

__all__ = ["MAJOR_ID", "MultiAgentCore", "minor_id", "parallel_env", "register_rllib_envs", "rllib_env_class",
           "rllib_env_name"]

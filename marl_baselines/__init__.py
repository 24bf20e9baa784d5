"""Multi-agent baselines on the N-agent form of the five problems: IPPO and MAPPO (paper §3.3,
spec/experiments.md §1.6–1.7) and MF-PPO (permutation-invariant DeepSet actor-critic, spec §4.1),
sampled with :class:`marl_baselines.sampler.BatchedSampler`."""

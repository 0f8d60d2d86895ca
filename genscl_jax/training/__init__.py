"""What every trainer shares: the one training loop, the train state, optimizers and schedules,
classification metrics, checkpointing (the only module that talks to orbax) and reporting (clu writers,
summary.json).

It imports only runtime (of genscl_jax); trainers and workdirs import it.
"""

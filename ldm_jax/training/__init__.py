"""Training: the train state, the two stages' losses and pure train steps, optimizers, EMA,
checkpointing (orbax), metrics (clu) and the loop that runs them on a device mesh."""

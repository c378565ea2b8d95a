"""Training engine: optimizers/schedules, the trainer, checkpoints and result files."""

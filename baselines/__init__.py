"""Fine-tuning baselines, registered into dacl through the ``dacl.plugins`` entry point (never imported by dacl)."""
from baselines import adapters, full_finetune, linear_probe, lora, prefix, qlora  # noqa: F401

"""Fine-tuning baselines, registered into dacl through the ``dacl.plugins`` entry point (never imported by dacl)."""
from baselines import adapters, bitfit, full_finetune, ia3, linear_probe, lora, prefix, qlora  # noqa: F401

"""Benchmarks (registered presets that load data as device tensors, or stream it from image files)."""
from dacl.benchmarks import image_lists  # noqa: F401  (Office-31, Office-Home, VisDA-2017, DomainNet)
from dacl.benchmarks import office_caltech  # noqa: F401  (Office-Caltech-10 JPEGs and cached features)
from dacl.benchmarks import text  # noqa: F401  (registers the blitzer text benchmark; transformers loads lazily)
from dacl.benchmarks.domain_pair import DomainPair, load_domain_pair, register_pair

__all__ = ["DomainPair", "load_domain_pair", "register_pair"]

"""dacl: domain adaptation, test-time adaptation, continual learning and PEFT baselines behind one Method contract."""
__version__ = "0.1.0"

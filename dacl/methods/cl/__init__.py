"""Continual-learning methods and plugins (EWC, LwF, replay land here; see the CL issue)."""

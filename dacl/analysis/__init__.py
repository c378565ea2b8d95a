"""Post-hoc analysis of finished runs: validator study, domain distance, feature embeddings, calibration."""

"""Cross-validation: plan and run the folds, then report over held-out folds."""

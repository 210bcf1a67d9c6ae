"""Microbenchmarks: optimizer step cost (optim), input pipeline rate (data), training step cost (train)."""

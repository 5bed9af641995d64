"""Prefect tasks: thin wrappers over `lstm_core` adding retries, logging and progress."""

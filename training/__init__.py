"""Offline training and evaluation: ``python -m training <subcommand>``."""

"""Callbacks: the training-loop hooks and the default and optional callbacks built on them."""

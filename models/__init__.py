"""Duet offline pipeline: data, two-tower training, evaluation and bundle export."""

"""Helpers: images, data, devices, fusion pipeline, losses, training, metrics."""

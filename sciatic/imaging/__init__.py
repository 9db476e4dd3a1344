"""Volumes and masks on their grid, and image preparation: the seed's montages, normalisation, pictures."""

__all__ = ["montage", "noise", "normalize", "picture", "volume"]

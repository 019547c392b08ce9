"""Error types shared across layers (CLI, data, models), free of any heavy import.

The data and model layers raise these; the CLI turns a :class:`ConfigError` into one line on
stderr and exit status 2. Keeping them here lets ``data/`` and ``models/`` report a user's
mistake without importing the CLI's config machinery.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration mistake made by the user; reported as one line, exit status 2."""


class UnreadableImageError(RuntimeError):
    """An image file that PIL cannot decode (the message names the file)."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); earlier checkpoints are intact."""

"""Imports of platforms' data exports (see ``export.py`` for how an export is read)."""

"""Command groups that live beside the features they drive.

Each module here adds its commands to the Typer application of ``service.cli`` when
imported; ``service.cli`` imports them all at the end of its own definitions.
"""

MODULES = ("daemon", "digest", "exports", "x")

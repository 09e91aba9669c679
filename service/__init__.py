"""lopper: keeps a person's social network worth having."""

__version__ = "0.1.0"

"""Commands for X: ``lopper auth x`` and ``lopper import x-archive``."""

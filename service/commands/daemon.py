"""Commands of the long-running service: ``lopper run``."""

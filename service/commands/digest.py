"""Commands of the digest and the review page: ``lopper digest``, ``lopper web``."""

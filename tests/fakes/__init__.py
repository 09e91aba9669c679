"""Stand-in platforms for the tests."""

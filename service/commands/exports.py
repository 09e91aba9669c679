"""Imports of the exports of networks with little or no API: Facebook, LinkedIn, Instagram."""

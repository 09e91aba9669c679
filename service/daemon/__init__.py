"""The long-running service (``lopper run``): schedule, work queue, systemd integration.

Kept light to import: ``service.config`` reads the cron helper from here.
"""

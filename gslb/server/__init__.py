"""The process: options (``options``), the composition root (``runtime``), the
transports with the C loop beside the UDP one (``transport/``), worker processes
(``workers``), the HTTP API and status page (``api``, ``static/``), metrics,
alerts and the demo.
"""

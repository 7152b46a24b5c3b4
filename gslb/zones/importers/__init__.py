"""Importers: other servers' zone data as gslb zone files (``gslb import``)."""

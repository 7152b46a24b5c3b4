"""DNSSEC online signing (issue 15): keys (``keys``) and the signer (``signer``).

Not wired into answering yet: docs/dnssec.md says what exists and what is next.
"""

"""Feeding secondary servers: AXFR and IXFR with the journal of served versions
and who may transfer (``xfr``), NOTIFY on serial changes (``notify``).
"""

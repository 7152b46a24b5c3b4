"""Where a client is: the GeoLookup protocol and GeoInfo (``lookup``), the MaxMind
databases behind it (``maxmind``: the only geoip2 import), and rule sets compiled
over the databases' networks (``tables``).
"""

"""Zone YAML -> frozen model, collecting every problem with file:line:col.

``load_zone(path)`` returns a :class:`gslb.zones.model.Zone` or raises
:class:`gslb.zones.errors.ConfigError` listing all problems at once. Unknown keys,
duplicate keys, bad values, undefined or unused pools and checks, CNAMEs beside
other data and names outside the zone are all errors: nothing is dropped
silently. The format is documented key by key in docs/zone-format.md.

One module per section of a zone file: ``ctx`` (the positioned readers),
``checks``, ``pools``, ``records``, ``balanced`` (each policy checks its own
``answer:`` keys, see ``gslb.answer.policies``) and ``zone`` (the file as a whole).
"""

from gslb.zones.load.balanced import parse_geo
from gslb.zones.load.zone import iter_zone_files, load_zone, load_zones

__all__ = ["iter_zone_files", "load_zone", "load_zones", "parse_geo"]

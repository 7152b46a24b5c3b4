"""Zone files in, a validated model out: the frozen model (``model``), YAML with
positions (``yamlsrc``), the loader that collects every positioned problem
(``load/``, ``errors``), the JSON Schema (``schema``), the zone directory as loaded
(``directory``) and the importers from BIND and octoDNS (``importers/``).
"""

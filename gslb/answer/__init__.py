"""A parsed query and a serving state in, reply bytes out: the serving state
(``state``: compiled zones, balanced plans per health view), built by ``build``;
``respond`` (the stages of a query, in order), the reply cache and kept balanced
replies (``cache``), the RFC 1034 lookup (``static``), balanced picks
(``balanced``), signed answers and denial (``signed``); geo (``geo/``: the lookup
protocol, the MaxMind reader, compiled tables), the select policies
(``policies/``) and ``gslb explain`` (``explain``). No sockets, no clock, no
global RNG.
"""

"""The DNS protocol, knowing no zones: the wire format (``wire``), names as lowercased
wire bytes (``names``), numbers and their names (``consts``), DNS cookies
(``cookies``), TSIG (``tsig``) and response rate limiting (``rrl``). Nothing here
imports the rest of gslb.
"""

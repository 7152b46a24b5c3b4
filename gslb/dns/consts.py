"""DNS numbers and their names, written once: types, class, rcodes, EDNS size.

The bottom layer: the wire codec, the model, the compiler, the engine, the
metrics and explain all take these from here.
"""

from __future__ import annotations

# resource record types used by name in the code
T_A, T_NS, T_CNAME, T_SOA, T_HINFO, T_AAAA, T_DS = 1, 2, 5, 6, 13, 28, 43
T_OPT = 41
T_IXFR, T_AXFR, T_ANY = 251, 252, 255

CLASS_IN = 1

# rcodes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

EDNS_MAX_UDP = 1232  # advertised and used as our UDP ceiling (DNS flag day 2020)

FAMILY_OF_TYPE = {T_A: 4, T_AAAA: 6}  # address record type -> IP version

RCODE_NAMES = {NOERROR: "NOERROR", FORMERR: "FORMERR", SERVFAIL: "SERVFAIL", NXDOMAIN: "NXDOMAIN",
               NOTIMP: "NOTIMP", REFUSED: "REFUSED", BADVERS: "BADVERS"}  # fmt: skip

# metric label values (other types are shown as TYPE<n>)
TYPE_NAMES = {
    T_A: "A", T_NS: "NS", T_CNAME: "CNAME", T_SOA: "SOA", 12: "PTR", 15: "MX", 16: "TXT",
    T_AAAA: "AAAA", 33: "SRV", T_DS: "DS", 64: "SVCB", 65: "HTTPS", 99: "SPF", T_IXFR: "IXFR",
    T_AXFR: "AXFR", T_ANY: "ANY", 257: "CAA",
}  # fmt: skip


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, str(rcode))


def type_name(rtype: int) -> str:
    return TYPE_NAMES.get(rtype, f"TYPE{rtype}")

"""The optional C extension; everything else is in pyproject.toml.

gslb.server.transport._fastpath (the UDP batch loop with reply-cache hits answered in C) is built when
a C compiler and Python's headers are there; without them the install goes on and
the server runs the pure-Python path, with the same answers (docs/design-notes.md).
"""

import sys

from setuptools import Extension, setup

ext = [
    Extension(
        "gslb.server.transport._fastpath",
        ["gslb/server/transport/_fastpath.c"],
        optional=True,
        extra_compile_args=["-O2"],
    )
]
setup(ext_modules=ext if sys.platform.startswith("linux") else [])

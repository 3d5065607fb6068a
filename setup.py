"""Build the optional C extension of the message path (see streamlib/speedups.py).

``optional=True``: where no C compiler is found, the build skips the extension and streamlib
installs and runs as pure Python."""

import platform

from setuptools import Extension, setup

ext_modules = []
if platform.python_implementation() == "CPython":
    ext_modules.append(Extension("streamlib._speedups", ["streamlib/_speedups.c"], optional=True))

setup(ext_modules=ext_modules)

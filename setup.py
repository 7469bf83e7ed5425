"""Extension list for atlas_fast.  Each compiled module is named explicitly.

``ATLAS_DEBUG=1`` builds with bounds checks and ``-O0 -g`` for debugging;
release builds (the default) use ``-O3`` and Cython's unchecked directives.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("ATLAS_DEBUG") == "1"

if DEBUG:
    CFLAGS = ["-O0", "-g", "-UNDEBUG"]
    DIRECTIVES = {"boundscheck": True, "wraparound": True, "cdivision": False}
else:
    CFLAGS = ["-O3", "-fno-strict-aliasing"]
    DIRECTIVES = {"boundscheck": False, "wraparound": False, "cdivision": True}
DIRECTIVES.update(language_level=3, embedsignature=True, initializedcheck=DEBUG)


def ext(name, sources, libraries=()):
    return Extension(
        name,
        sources=sources,
        include_dirs=["csrc"],
        libraries=list(libraries),
        extra_compile_args=CFLAGS,
    )


EXTENSIONS = [
    ext("atlas_fast._splitter", ["atlas_fast/_splitter.pyx", "csrc/atlas_split.c"]),
    ext("atlas_fast._parser", ["atlas_fast/_parser.pyx", "csrc/atlas_mime.c", "csrc/atlas_html.c"]),
    ext("atlas_fast._features", ["atlas_fast/_features.pyx", "csrc/atlas_features.c"]),
    # Links the system SQLite (Debian: libsqlite3-dev); wheels bundle it.
    ext("atlas_fast._sqlwriter", ["atlas_fast/_sqlwriter.pyx"], libraries=["sqlite3"]),
]

setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=DIRECTIVES, quiet=True))

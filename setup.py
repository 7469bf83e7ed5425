"""Extension list for atlas_fast.  Each compiled module is named explicitly.

``ATLAS_DEBUG=1`` builds with bounds checks and ``-O0 -g`` for debugging;
``ATLAS_SANITIZE=1`` adds AddressSanitizer and UndefinedBehaviorSanitizer
to that (for tools/fuzz.py, which says how to run it); release builds (the
default) use ``-O3`` and Cython's unchecked directives.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

SANITIZE = os.environ.get("ATLAS_SANITIZE") == "1"
DEBUG = SANITIZE or os.environ.get("ATLAS_DEBUG") == "1"
SANITIZERS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined"]

LDFLAGS = SANITIZERS if SANITIZE else []
if DEBUG:
    CFLAGS = ["-O0", "-g", "-UNDEBUG"] + (SANITIZERS + ["-fno-omit-frame-pointer"]
                                         if SANITIZE else [])
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
        extra_link_args=LDFLAGS,
    )


EXTENSIONS = [
    ext("atlas_fast._splitter", ["atlas_fast/_splitter.pyx", "csrc/atlas_split.c"]),
    ext("atlas_fast._parser", ["atlas_fast/_parser.pyx", "csrc/atlas_mime.c", "csrc/atlas_html.c"]),
    ext("atlas_fast._features", ["atlas_fast/_features.pyx", "csrc/atlas_features.c"]),
    # Links the system SQLite (Debian: libsqlite3-dev); wheels bundle it.
    ext("atlas_fast._sqlwriter", ["atlas_fast/_sqlwriter.pyx"], libraries=["sqlite3"]),
]

setup(ext_modules=cythonize(EXTENSIONS, compiler_directives=DIRECTIVES, quiet=True))

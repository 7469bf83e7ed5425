# Declarations of the compiled mbox boundary scan (see _splitter.pyx).
from libc.stdint cimport int64_t

cdef extern from "atlas_split.h" nogil:
    size_t atlas_split_scan(const unsigned char *buf, size_t begin, size_t end,
                            int stream_start, int64_t *out, size_t max,
                            size_t *resume)
    int atlas_split_sniff(const unsigned char *buf, size_t len, int64_t *first)

cpdef tuple scan_starts(const unsigned char[::1] buf, Py_ssize_t begin, Py_ssize_t end,
                        bint stream_start=*)
cpdef Py_ssize_t find_first_start(const unsigned char[::1] buf)

# cython: freethreading_compatible = False
"""Compiled mbox boundary scan: one call per buffer, GIL released."""
from cpython.array cimport array, clone, resize
from libc.stdint cimport int64_t

cdef array _INT64_TEMPLATE = array("q")


cpdef tuple scan_starts(const unsigned char[::1] buf, Py_ssize_t begin, Py_ssize_t end,
                        bint stream_start=False):
    """Message starts in ``buf[begin:end]``.

    Parameters
    ----------
    buf : buffer
        Contiguous bytes of an mbox stream.
    begin, end : int
        Range to scan; positions returned are relative to ``buf``.
    stream_start : bool
        ``buf[0]`` is the first byte of the stream, so a ``From `` there counts.

    Returns
    -------
    (array('q'), int)
        The start positions, and where a later scan of a longer buffer must
        resume so that a ``\\nFrom `` straddling ``end`` is not missed.
    """
    if begin < 0 or end > buf.shape[0] or begin > end:
        raise IndexError(f"scan range [{begin}, {end}) outside buffer of {buf.shape[0]} bytes")
    cdef size_t resume = <size_t>begin
    # A start needs at least "\n\nFrom " before the next one, so this bound
    # can never be hit; it keeps the C side from writing past the array.
    cdef size_t capacity = <size_t>((end - begin) // 7 + 2)
    cdef array starts = clone(_INT64_TEMPLATE, <Py_ssize_t>capacity, False)
    cdef int64_t *out = <int64_t *>starts.data.as_voidptr
    cdef size_t n = 0
    if end > begin:
        with nogil:
            n = atlas_split_scan(&buf[0], <size_t>begin, <size_t>end,
                                 1 if stream_start else 0, out, capacity, &resume)
    resize(starts, <Py_ssize_t>n)
    return starts, <Py_ssize_t>resume


cpdef Py_ssize_t find_first_start(const unsigned char[::1] buf):
    """Position of the first message start in ``buf`` (the stream's first
    bytes), or -1 when there is none: the shape check behind "not an mbox"."""
    cdef int64_t first = -1
    if buf.shape[0] == 0:
        return -1
    with nogil:
        atlas_split_sniff(&buf[0], <size_t>buf.shape[0], &first)
    return <Py_ssize_t>first

# Declarations of the compiled feature hasher and linear scorer (see _features.pyx).
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t

# One hashed feature occurrence.  ``name``/``name_len`` point into a UTF-8
# buffer that outlives the message's featurising (a str's cached UTF-8 or a
# bytes object kept in the featuriser), so readable names are only built for
# the few features that end up in ``reasons``.
cdef struct Feat:
    uint32_t bucket
    float value
    const char *prefix
    const char *name
    int32_t name_len
    int32_t fold          # 1: lower-case ASCII when the name is built

cdef class Featurizer:
    cdef readonly int nbits
    cdef uint32_t mask
    cdef frozenset header_allow
    cdef Feat *feats
    cdef Py_ssize_t n_feats
    cdef Py_ssize_t cap_feats
    cdef list keep                 # bytes objects whose buffers Feat.name points into

    cdef int _reserve(self, Py_ssize_t extra) except -1
    cdef int _push(self, uint32_t h, float value, const char *prefix,
                   const char *name, Py_ssize_t name_len, int fold) except -1
    cdef int _push_str(self, const char *prefix, uint32_t seed, str text, float value) except -1
    cdef Py_ssize_t _tokens(self, const char *prefix, uint32_t seed, const char *s,
                            Py_ssize_t n, Py_ssize_t max_tokens, bint bigrams,
                            Py_ssize_t *upper, Py_ssize_t *letters) except -1
    cdef int _featurize(self, object msg, object extras) except -1
    cdef int _push_static(self, const char *name) except -1
    cdef void _share(self, Py_ssize_t first, Py_ssize_t count) noexcept
    cdef tuple _names(self, Py_ssize_t *order, int K)

    cpdef tuple csr(self, list msgs, list extras)
    cpdef tuple score(self, list msgs, list extras, const float[::1] weights, double bias,
                      int top_k=*)

cpdef uint64_t text_digest(object text, uint64_t seed=*) except? 0
cpdef list chunk_digests(list msgs, list contexts, uint64_t seed=*)
cpdef double sgd_train(const int64_t[::1] indptr, const int32_t[::1] indices,
                       const float[::1] data, const double[::1] y,
                       const double[::1] sample_weight, const int64_t[::1] order,
                       double[::1] w, double lr, double l2) except? -1
cpdef object margins_csr(const int64_t[::1] indptr, const int32_t[::1] indices,
                         const float[::1] data, const double[::1] w, double bias)

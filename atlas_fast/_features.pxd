# Declarations of the compiled feature hasher and linear scorer (see _features.pyx).
from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t

cdef extern from "atlas_features.h" nogil:
    # One hashed feature occurrence; ``name`` points into a str's cached
    # UTF-8 or a static string, so readable names are only built for the
    # few features that end up in ``reasons``.
    ctypedef struct atlas_feat:
        uint32_t bucket
        float value
        const char *prefix
        const char *name
        int32_t name_len
        int32_t fold
    ctypedef struct atlas_feats:
        atlas_feat *items
        size_t n
        size_t cap
        int shift
        const uint16_t *prefetch
    int atlas_feats_reserve(atlas_feats *f, size_t extra)
    void atlas_feats_free(atlas_feats *f)
    uint32_t atlas_hash(uint32_t seed, const char *s, size_t n, int fold)
    uint32_t atlas_prefix_seed(const char *prefix)
    uint32_t atlas_seed_n(const char *s, size_t n, int fold)
    int atlas_push_split(atlas_feats *f, const char *name, size_t n, int fold, float value)
    int atlas_push(atlas_feats *f, const char *prefix, uint32_t seed, const char *name,
                   size_t n, int fold, float value)
    long atlas_tokens(atlas_feats *f, const char *prefix, const char *prefix2, const char *s,
                      size_t n, size_t max_tokens, size_t *upper, size_t *letters)
    ctypedef struct atlas_open:
        const char *prefix
        size_t limit
        size_t max
        size_t count
        int fallback
    long atlas_tokens_open(atlas_feats *f, const char *prefix, const char *prefix2,
                           const char *s, size_t n, size_t max_tokens, size_t *upper,
                           size_t *letters, atlas_open *o)
    long atlas_url_path_tokens(atlas_feats *f, const char *prefix, const char *url, size_t n,
                               size_t max_tokens)
    int atlas_url_host(const char *u, size_t n, size_t *start, size_t *end)
    int atlas_ipv4_public(const unsigned char oct[4])
    int atlas_received_ipv4(const char *v, size_t n, char *out, size_t clause[2])
    int atlas_origin_naming(const char *v, size_t n, int *dynamic, int *no_rdns)
    size_t atlas_squeeze(const char *s, size_t n, char *dst, size_t want)
    int atlas_contains_ci(const char *hay, size_t n, const char *needle, size_t m)
    void atlas_digest128(const void *p, size_t n, uint64_t seed, uint64_t out[2])
    int atlas_contains(const char *hay, size_t n, const char *needle, size_t m)
    int atlas_name_mismatch(const char *name, size_t n, const char *addr, size_t an)


cdef class Featurizer:
    cdef readonly int nbits
    cdef frozenset header_allow
    cdef atlas_feats fb
    cdef readonly bint url_paths
    cdef readonly Py_ssize_t text_cap
    cdef readonly bint bigrams
    cdef readonly float extra_value
    cdef readonly Py_ssize_t opening_bytes
    cdef readonly bint one_pass_opening
    cdef readonly bint url_domains
    cdef uint32_t seed_struct
    cdef uint32_t seed_enrich[6]
    cdef list keep

    cdef int _push_str(self, const char *prefix, str text, float value=*) except -1
    cdef int _push_static(self, const char *name) except -1
    cdef int _field(self, const char *prefix, const char *prefix2, object value,
                    Py_ssize_t cap, Py_ssize_t max_tokens, size_t *upper,
                    size_t *letters, bint whole_words=*) except -1
    cdef int _body(self, object text, size_t *upper, size_t *letters) except -1
    cdef int _featurize(self, object msg, object extras) except -1
    cdef int _push_enrichment(self, tuple extra) except -1
    cdef int _push_packed(self, bytes packed, float v) except -1
    cdef int _push_prefixed(self, int k, str value, float v) except -1
    cdef int _header_value_tokens(self, object msg) except -1
    cdef tuple _names(self, Py_ssize_t *order, int K)
    cdef int _score_all(self, list msgs, list extras, const uint16_t *w, double bias, int K,
                        double threshold, double[::1] out, list reasons) except -1

    cpdef tuple csr(self, list msgs, list extras)
    cpdef tuple score(self, list msgs, list extras, const uint16_t[::1] weights, double bias,
                      int top_k=*, double threshold=*)

cpdef list chunk_digests(list msgs, list contexts, uint64_t seed=*)
cpdef double sgd_train(const int64_t[::1] indptr, const int32_t[::1] indices,
                       const float[::1] data, const double[::1] y,
                       const double[::1] sample_weight, const int64_t[::1] order,
                       double[::1] w, double lr, double l2) except? -1
cpdef object margins_csr(const int64_t[::1] indptr, const int32_t[::1] indices,
                         const float[::1] data, const double[::1] w, double bias)

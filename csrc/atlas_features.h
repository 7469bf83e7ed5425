/* Feature hashing, tokenising and Received-chain parsing for the classifier.
 *
 * Plain C, no Python API: _features.pyx drives these over whole chunks.
 */
#ifndef ATLAS_FEATURES_H
#define ATLAS_FEATURES_H

#include <stddef.h>
#include <stdint.h>

/* One hashed feature occurrence.  ``name`` points into a buffer that outlives
 * the message's featurising (a str's cached UTF-8, or a static string), so a
 * readable name is only built for the few features reported as reasons. */
typedef struct {
    uint32_t bucket;
    float value;
    const char *prefix;
    const char *name;
    int32_t name_len;
    int32_t fold; /* 1: lower-case ASCII when the name is built */
} atlas_feat;

typedef struct {
    atlas_feat *items;
    size_t n;
    size_t cap;
    int shift; /* bucket = hash >> shift: the top 32 - shift bits */
    /* When set, each pushed feature's weight is prefetched: the scorer reads
     * it a few hundred features later, by when the load has landed instead
     * of stalling on a cache miss into a multi-megabyte weight array (of
     * bfloat16 weights: see Featurizer.score). */
    const uint16_t *prefetch;
} atlas_feats;

int atlas_feats_reserve(atlas_feats *f, size_t extra);
void atlas_feats_free(atlas_feats *f);

/* Hash of name s[:n] (``fold``: ASCII lower-cased) under a prefix's seed. */
uint32_t atlas_hash(uint32_t seed, const char *s, size_t n, int fold);
/* Seed of a prefix: of a C string, or of s[:n]. */
uint32_t atlas_prefix_seed(const char *prefix);
uint32_t atlas_seed_n(const char *s, size_t n, int fold);

/* Push one feature: ``prefix`` + ``name`` hashed (``fold``: ASCII lower-cased). */
int atlas_push(atlas_feats *f, const char *prefix, uint32_t seed, const char *name, size_t n,
               int fold, float value);

/* Push a whole-string feature "prefix:rest" (prefix "" for the reasons):
 * hashed as prefix "prefix:" and name "rest", as feature_bucket() splits a
 * name at its first ':'. */
int atlas_push_split(atlas_feats *f, const char *name, size_t n, int fold, float value);

/* Push the tokens of s[:n] (and bigrams of adjacent word tokens when
 * ``prefix2`` is not NULL), at most ``max_tokens`` pushes; counts upper-case
 * and all ASCII letters.  Returns the number pushed, or -1 out of memory. */
long atlas_tokens(atlas_feats *f, const char *prefix, const char *prefix2, const char *s,
                  size_t n, size_t max_tokens, size_t *upper, size_t *letters);

/* The opening words of a text (feature version 7's ``w0:`` tokens), taken
 * by atlas_tokens_open in the same pass as the text's own tokens: every
 * token ending at or before byte ``limit``, at most ``max`` of them
 * (<= ATLAS_OPEN_MAX), pushed after the text's tokens with the names and
 * buckets atlas_tokens(prefix, s, limit, max) would give.  The caller cuts
 * ``limit`` at whitespace (or the text's end), so no run straddles it.
 * ``fallback`` comes back 1, and nothing is pushed, when the pass cannot
 * give exactly that (a CJK run inside the opening, or the text's token
 * limit reached before ``limit``): the caller then tokenises the opening
 * on its own. */
#define ATLAS_OPEN_MAX 64
typedef struct {
    const char *prefix;
    size_t limit;
    size_t max;
    size_t count;  /* out: pushed */
    int fallback;  /* out */
} atlas_open;

long atlas_tokens_open(atlas_feats *f, const char *prefix, const char *prefix2, const char *s,
                       size_t n, size_t max_tokens, size_t *upper, size_t *letters,
                       atlas_open *o);

/* Tokens of a URL's path and query (after the host), prefix ``url_path:``;
 * at most ``max_tokens``.  Returns the number pushed, or -1. */
long atlas_url_path_tokens(atlas_feats *f, const char *prefix, const char *url, size_t n,
                           size_t max_tokens);

/* The host part of a URL: [start, end) offsets; 0 when there is none.  Same
 * grammar as enrich.url_host: optional scheme, slashes, userinfo, then up to
 * '/', '?', '#', ':' or '\\'; dots trimmed at both ends. */
int atlas_url_host(const char *u, size_t n, size_t *start, size_t *end);

/* 1 when an IPv4 address (4 octets) is globally routable by Python 3.11's
 * ipaddress rules (is_global and not multicast). */
int atlas_ipv4_public(const unsigned char oct[4]);

/* First public IPv4 in the "from" clause of one Received value.
 * Returns 1 and writes the dotted quad (NUL-terminated, <= 15 chars) to
 * ``out``; 0 when none; 3 when the clause (all ASCII) holds no public IPv4
 * but a bracketed literal with a ':' (an IPv6 candidate: the caller tests
 * the clause's IPv6 literals, which enrich.origin_ip reads after its IPv4
 * ones), with the clause's bounds in clause[0:2]; 2 when the value holds
 * non-ASCII bytes that could change what Python reads (the caller then asks
 * the Python code). */
int atlas_received_ipv4(const char *v, size_t n, char *out, size_t clause[2]);

/* How the Received header naming the origin hop names it: ``dynamic`` when
 * a host name looks like an access network (dsl, dyn, pool, ... or a dotted
 * quad spelt into the name), ``no_rdns`` when there is no "(name.domain"
 * or it says "unknown".  Returns 0, or 2 for non-ASCII bytes or a clause
 * over 1 KiB (the caller then asks the Python code). */
int atlas_origin_naming(const char *v, size_t n, int *dynamic, int *no_rdns);

/* s[:n] with each run of ASCII whitespace as one space and none at either
 * end, into dst; stops after ``want`` output bytes.  Returns the bytes
 * written (dst needs room for ``want``). */
size_t atlas_squeeze(const char *s, size_t n, char *dst, size_t want);

/* 1 when needle[:m] (lower-case ASCII) occurs in hay[:n] with ASCII case
 * folded, else 0. */
int atlas_contains_ci(const char *hay, size_t n, const char *needle, size_t m);

/* XXH3-128 of p[:n] under seed (vendored xxHash 0.8.2, BSD-2-Clause):
 * out[0] the high, out[1] the low 64 bits. */
void atlas_digest128(const void *p, size_t n, uint64_t seed, uint64_t out[2]);

/* 1 when needle[:m] occurs in hay[:n] (case-sensitive), else 0. */
int atlas_contains(const char *hay, size_t n, const char *needle, size_t m);

/* The display-name test of enrich._name_flags on an ASCII name: 1 when
 * name[:n] has words (runs of 3+ ASCII letters, lower-cased) and none of
 * them occurs in addr[:an] as it is (case-sensitive), else 0. */
int atlas_name_mismatch(const char *name, size_t n, const char *addr, size_t an);

#endif /* ATLAS_FEATURES_H */

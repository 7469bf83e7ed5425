/* mbox boundary scan: where each message of a buffer starts. */
#ifndef ATLAS_SPLIT_H
#define ATLAS_SPLIT_H

#include "common.h"

/* Finds message starts in buf[begin, end).
 *
 * A message starts at a line "From " that either opens the stream or follows
 * an empty line ("\n\n" or "\n\r\n" before it).  Positions are written to
 * out[0..max); the scan stops early when out is full.  When `begin` is 0 and
 * `stream_start` is non-zero, a "From " at offset 0 counts as a start.
 *
 * Returns the number of starts written.  *resume receives the position to
 * continue scanning from (end when the whole range was scanned). */
size_t atlas_split_scan(const unsigned char *buf, size_t begin, size_t end,
                        int stream_start, int64_t *out, size_t max,
                        size_t *resume);

/* Returns 1 when buf[0..len) holds a message start: "From " after optional
 * blank lines, or a "From " line after an empty line.  *first receives the
 * position of the first start (or -1). */
int atlas_split_sniff(const unsigned char *buf, size_t len, int64_t *first);

#endif /* ATLAS_SPLIT_H */

/* atlas_html.h: HTML to plain text, in plain C. */
#ifndef ATLAS_HTML_H
#define ATLAS_HTML_H

#include "common.h"

/* Convert UTF-8 (or ASCII-compatible) HTML to text: tags dropped, script /
 * style / head / comments skipped, entities decoded to UTF-8, block tags and
 * <br> as newlines, blanks collapsed.  href / src values that look like URLs
 * are appended to urls, each followed by '\n'; *n_urls counts them.
 * Returns 0, or -1 when out of memory. */
int atlas_html_to_text(const uint8_t *s, size_t n, atlas_buf *text,
                       atlas_buf *urls, long *n_urls);

#endif /* ATLAS_HTML_H */

# Declarations of the compiled message parser (see _parser.pyx).

cdef class ParsedMessage:
    # Header fields, decoded (RFC 2047) and unfolded; None when absent.
    cdef public object message_id      # str, angle brackets kept as in the header
    cdef public object from_addr       # str, lower-cased addr-spec
    cdef public object from_domain     # str, lower-cased domain of from_addr
    cdef public object from_name       # str, decoded display name
    cdef public object to_addr         # str, first To address, lower-cased
    cdef public object reply_to_addr   # str, lower-cased
    cdef public object return_path     # str, lower-cased, no angle brackets
    cdef public object subject         # str
    cdef public object date            # str, ISO 8601 UTC "YYYY-MM-DDTHH:MM:SSZ"
    cdef public object content_type    # str, top-level type/subtype lower-cased
    cdef public object x_mailer        # str (X-Mailer or User-Agent)
    cdef public object auth_results    # str, Authentication-Results values joined by "\n"
    cdef public object received_spf    # str, first Received-SPF value
    cdef public list received          # list[str], unfolded Received values, top first
    cdef public list header_names      # list[str], lower-cased names in order
    # Body.
    cdef public object plain           # str | None, first text/plain part decoded
    cdef public object text            # str, classifier text: plain, else HTML as text
    cdef public bint has_html
    cdef public bint html_only
    cdef public list urls              # list[str], at most MAX_URLS, in order
    cdef public list attachments       # list[tuple[str, str]]: (filename, content type)
    cdef public int n_parts
    cdef public int n_attachments
    cdef public int n_urls
    cdef public int n_headers
    cdef public long long header_bytes
    cdef public object error           # str | None: short reason, e.g. "mime depth limit"

cpdef list parse_chunk(const unsigned char[::1] buf, const long long[::1] starts, const long long[::1] ends)
cpdef ParsedMessage parse_message(const unsigned char[::1] raw)

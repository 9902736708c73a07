#ifndef HERALD_CCURL_H
#define HERALD_CCURL_H

#include <stddef.h>
#include <curl/curl.h>

/*
 * Typed, non-variadic wrappers around libcurl for Swift (Swift cannot call variadic C such as
 * curl_easy_setopt / curl_easy_getinfo / curl_multi_setopt), plus a small "transfer" object that
 * owns one easy handle together with everything libcurl needs to outlive the setopt calls:
 * the error buffer, the request header list and the response buffers filled by C callbacks.
 */

/* ---- easy handle options ---- */
CURLcode ccurl_easy_setopt_long(CURL *easy, CURLoption option, long value);
CURLcode ccurl_easy_setopt_off_t(CURL *easy, CURLoption option, curl_off_t value);
CURLcode ccurl_easy_setopt_string(CURL *easy, CURLoption option, const char *value);
CURLcode ccurl_easy_setopt_pointer(CURL *easy, CURLoption option, void *value);
CURLcode ccurl_easy_setopt_slist(CURL *easy, CURLoption option, struct curl_slist *value);
CURLcode ccurl_easy_setopt_write_callback(CURL *easy, curl_write_callback callback, void *userdata);
CURLcode ccurl_easy_setopt_header_callback(CURL *easy, curl_write_callback callback, void *userdata);
CURLcode ccurl_easy_getinfo_long(CURL *easy, CURLINFO info, long *value);

/* ---- multi handle ---- */
CURLMcode ccurl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);
/* Reads the next CURLMSG_DONE message: returns 1 and fills easy/result, or 0 when none is left. */
int ccurl_multi_info_read_done(CURLM *multi, CURL **easy, CURLcode *result);

/* ---- transfer: an easy handle with C-side buffers ---- */
typedef struct ccurl_transfer ccurl_transfer;

/* Creates an easy handle with NOSIGNAL, close-on-exec sockets, the error buffer and the body/header callbacks set.
   NULL on failure. */
ccurl_transfer *ccurl_transfer_create(void);
/* Frees the header list, buffers and the easy handle (which must not be in a multi handle any more). */
void ccurl_transfer_destroy(ccurl_transfer *transfer);
CURL *ccurl_transfer_easy(ccurl_transfer *transfer);
/* Appends one "Name: value" request header line; returns 0 on success. */
int ccurl_transfer_append_header(ccurl_transfer *transfer, const char *line);
/* Installs the accumulated header list as CURLOPT_HTTPHEADER. */
CURLcode ccurl_transfer_apply_headers(ccurl_transfer *transfer);
/* Caps the response body; a larger body fails the transfer with CURLE_WRITE_ERROR. 0 = no cap. */
void ccurl_transfer_set_max_body(ccurl_transfer *transfer, size_t max_bytes);
/* The response body received so far. */
const unsigned char *ccurl_transfer_body(const ccurl_transfer *transfer, size_t *length);
/* The raw header block of the final response (status line included, CRLF separated). */
const char *ccurl_transfer_headers(const ccurl_transfer *transfer, size_t *length);
/* curl's error buffer text (may be empty). */
const char *ccurl_transfer_error(const ccurl_transfer *transfer);
/* 1 when the body cap was exceeded. */
int ccurl_transfer_body_overflowed(const ccurl_transfer *transfer);
/*
 * Streams the response body instead of buffering it: each piece curl receives goes to `sink` at once
 * (on the thread driving the transfer), with `context` as given. The sink returns 1 to go on, 0 to fail
 * the transfer with CURLE_WRITE_ERROR. The body cap does not apply; the sink bounds what it keeps.
 */
typedef int (*ccurl_body_sink)(void *context, const unsigned char *bytes, size_t length);
void ccurl_transfer_set_body_sink(ccurl_transfer *transfer, ccurl_body_sink sink, void *context);

/* ---- misc ---- */
/* Names the calling thread (visible in ps/top/gdb); no-op where unsupported. Names are cut to 15 bytes on Linux. */
void ccurl_set_current_thread_name(const char *name);

#endif

#define _GNU_SOURCE
#include "ccurl.h"

#include <pthread.h>
#include <sys/socket.h>

#include <stdlib.h>
#include <string.h>

CURLcode ccurl_easy_setopt_long(CURL *easy, CURLoption option, long value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode ccurl_easy_setopt_off_t(CURL *easy, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode ccurl_easy_setopt_string(CURL *easy, CURLoption option, const char *value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode ccurl_easy_setopt_pointer(CURL *easy, CURLoption option, void *value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode ccurl_easy_setopt_slist(CURL *easy, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(easy, option, value);
}

CURLcode ccurl_easy_setopt_write_callback(CURL *easy, curl_write_callback callback, void *userdata) {
    CURLcode rc = curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, callback);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(easy, CURLOPT_WRITEDATA, userdata);
}

CURLcode ccurl_easy_setopt_header_callback(CURL *easy, curl_write_callback callback, void *userdata) {
    CURLcode rc = curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, callback);
    if (rc != CURLE_OK) return rc;
    return curl_easy_setopt(easy, CURLOPT_HEADERDATA, userdata);
}

CURLcode ccurl_easy_getinfo_long(CURL *easy, CURLINFO info, long *value) {
    return curl_easy_getinfo(easy, info, value);
}

CURLMcode ccurl_multi_setopt_long(CURLM *multi, CURLMoption option, long value) {
    return curl_multi_setopt(multi, option, value);
}

int ccurl_multi_info_read_done(CURLM *multi, CURL **easy, CURLcode *result) {
    int queued = 0;
    CURLMsg *message;
    while ((message = curl_multi_info_read(multi, &queued)) != NULL) {
        if (message->msg == CURLMSG_DONE) {
            *easy = message->easy_handle;
            *result = message->data.result;
            return 1;
        }
    }
    return 0;
}

/* ---- transfer ---- */

typedef struct {
    char *data;
    size_t length;
    size_t capacity;
} ccurl_buffer;

struct ccurl_transfer {
    CURL *easy;
    struct curl_slist *headers;
    ccurl_buffer body;
    ccurl_buffer response_headers;
    size_t max_body;
    int body_overflowed;
    ccurl_body_sink body_sink;
    void *body_sink_context;
    char error[CURL_ERROR_SIZE];
};

static int buffer_append(ccurl_buffer *buffer, const char *bytes, size_t count) {
    if (count == 0) return 1;
    if (buffer->length + count > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 1024;
        while (capacity < buffer->length + count) capacity *= 2;
        char *grown = realloc(buffer->data, capacity);
        if (grown == NULL) return 0;
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->length, bytes, count);
    buffer->length += count;
    return 1;
}

static size_t body_callback(char *bytes, size_t size, size_t count, void *userdata) {
    ccurl_transfer *transfer = userdata;
    size_t total = size * count;
    if (transfer->body_sink != NULL) {
        return transfer->body_sink(transfer->body_sink_context, (const unsigned char *)bytes, total) ? total : 0;
    }
    if (transfer->max_body != 0 && transfer->body.length + total > transfer->max_body) {
        transfer->body_overflowed = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    return buffer_append(&transfer->body, bytes, total) ? total : 0;
}

static size_t header_callback(char *bytes, size_t size, size_t count, void *userdata) {
    ccurl_transfer *transfer = userdata;
    size_t total = size * count;
    /* A new status line starts a new response (100 Continue, redirects, proxy CONNECT): keep only the last. */
    if (total >= 5 && memcmp(bytes, "HTTP/", 5) == 0) {
        transfer->response_headers.length = 0;
    }
    return buffer_append(&transfer->response_headers, bytes, total) ? total : 0;
}

/*
 * libcurl 7.88 opens its sockets without close-on-exec: a process started while a transfer runs would inherit the
 * connection and keep it open after curl closes it (a cancelled request's server never sees the hang-up).
 */
static curl_socket_t open_cloexec_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address) {
    (void)clientp;
    (void)purpose;
    return socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

ccurl_transfer *ccurl_transfer_create(void) {
    ccurl_transfer *transfer = calloc(1, sizeof(ccurl_transfer));
    if (transfer == NULL) return NULL;
    transfer->easy = curl_easy_init();
    if (transfer->easy == NULL) {
        free(transfer);
        return NULL;
    }
    if (curl_easy_setopt(transfer->easy, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(transfer->easy, CURLOPT_ERRORBUFFER, transfer->error) != CURLE_OK
        || curl_easy_setopt(transfer->easy, CURLOPT_OPENSOCKETFUNCTION, open_cloexec_socket) != CURLE_OK
        || ccurl_easy_setopt_write_callback(transfer->easy, body_callback, transfer) != CURLE_OK
        || ccurl_easy_setopt_header_callback(transfer->easy, header_callback, transfer) != CURLE_OK) {
        ccurl_transfer_destroy(transfer);
        return NULL;
    }
    return transfer;
}

void ccurl_transfer_destroy(ccurl_transfer *transfer) {
    if (transfer == NULL) return;
    if (transfer->easy != NULL) curl_easy_cleanup(transfer->easy);
    curl_slist_free_all(transfer->headers);
    free(transfer->body.data);
    free(transfer->response_headers.data);
    free(transfer);
}

CURL *ccurl_transfer_easy(ccurl_transfer *transfer) {
    return transfer->easy;
}

int ccurl_transfer_append_header(ccurl_transfer *transfer, const char *line) {
    struct curl_slist *appended = curl_slist_append(transfer->headers, line);
    if (appended == NULL) return -1;
    transfer->headers = appended;
    return 0;
}

CURLcode ccurl_transfer_apply_headers(ccurl_transfer *transfer) {
    return curl_easy_setopt(transfer->easy, CURLOPT_HTTPHEADER, transfer->headers);
}

void ccurl_transfer_set_max_body(ccurl_transfer *transfer, size_t max_bytes) {
    transfer->max_body = max_bytes;
}

void ccurl_transfer_set_body_sink(ccurl_transfer *transfer, ccurl_body_sink sink, void *context) {
    transfer->body_sink = sink;
    transfer->body_sink_context = context;
}

const unsigned char *ccurl_transfer_body(const ccurl_transfer *transfer, size_t *length) {
    *length = transfer->body.length;
    return (const unsigned char *)transfer->body.data;
}

const char *ccurl_transfer_headers(const ccurl_transfer *transfer, size_t *length) {
    *length = transfer->response_headers.length;
    return transfer->response_headers.data;
}

const char *ccurl_transfer_error(const ccurl_transfer *transfer) {
    return transfer->error;
}

int ccurl_transfer_body_overflowed(const ccurl_transfer *transfer) {
    return transfer->body_overflowed;
}

void ccurl_set_current_thread_name(const char *name) {
#if defined(__linux__)
    char truncated[16];
    strncpy(truncated, name, sizeof(truncated) - 1);
    truncated[sizeof(truncated) - 1] = '\0';
    pthread_setname_np(pthread_self(), truncated);
#elif defined(__APPLE__)
    pthread_setname_np(name);
#else
    (void)name;
#endif
}

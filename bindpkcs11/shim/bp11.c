/*
 * bp11.c - the bindpkcs11 signing shim: RFC 7512 URI + digest in, signature out, via PKCS#11.
 * Also: URI in, the key pair's DNSKEY public key out (bp11_public_key, for dnssec-keyfromlabel),
 * through the same URI cache, login, session pool and recovery as signing (run_on_key).
 *
 * Shape
 *   URI cache (hash of the exact URI string) -> struct key -> struct token -> struct module.
 *   The module comes only from PKCS11_LIBRARY_PATH and the PIN only from PKCS11_LIBRARY_PIN or
 *   PKCS11_LIBRARY_PIN_FILE: a URI naming a PIN or a module (pin-value, pin-source, module-path,
 *   module-name) is refused, since key URIs live in key files and BIND logs them.  Messages
 *   never quote a URI's query part.
 *   A module is one dlopen'ed PKCS#11 library, initialised with CKF_OS_LOCKING_OK so that many
 *   sessions may be used from many threads.  A token holds the PIN (read once), a bounded pool
 *   of sessions (created on demand, at most POOL_MAX) and is logged in once per module
 *   generation.  A key caches its object handle, key type and signature size.
 *
 * Locking (always taken in this order, never the other way round)
 *   g_lock      URI cache and module list; held only for lookups and first-time set-up.
 *   mod->rw     read-held by every sign attempt (including C_Sign: shared, so signers never
 *               serialise on it); write-held by re-initialisation, which therefore never runs
 *               under a thread that is mid-sign.  Writers are preferred so a busy signer pool
 *               cannot starve a recovery.  mod->gen counts C_Initialize calls.
 *   mod->mu     the module's token list.
 *   key->find_mu  held by the one thread that looks a key up (and makes its session copy) while
 *               others wait for its result; taken with a session borrowed, before tok->mu.
 *   tok->mu     pool, per-generation token state, cached key handles; never held in C_Sign.
 *   g_sticky    leaf lock for the process-wide list of tokens whose PIN was rejected.
 *
 * Recovery
 *   Every CKR is interpreted in classify().  CKRs meaning "the token, session or login is gone"
 *   make bp11_sign re-initialise the module (C_Finalize + C_Initialize, drop sessions and
 *   handles, find token and key, log in again unless the PIN was rejected) and retry ONCE.
 *   Re-initialisation happens at most once per RETRY_INTERVAL_NS per module; in between, a
 *   missing token or an uninitialisable module is reported at once (fail fast, never a hang).
 *   One exception, settling: a token-level failure ("not found", CKR_GENERAL_ERROR or
 *   CKR_USER_PIN_NOT_INITIALIZED from C_Login ...) of a token that this process has not used
 *   yet, or that has answered since its last settling (a success, or "key not found" on a
 *   token that reports itself healthy), earns up to SETTLE_TRIES unthrottled
 *   re-initialisations after pauses of 10, 20, 40 and 80 ms, then 160 ms each (0.95 s in all),
 *   because SoftHSM misses a token whose token.object another process is rewriting (see the
 *   end of this comment).  Once that budget is spent the rate limit above applies again until
 *   the token answers, so a token that is really absent costs ~1 s on first use (or once after
 *   it went away) and fails at once afterwards.  Why 0.95 s: with two CPU burners beside a
 *   tight login loop, each settling re-initialisation woke into the torn file about half the
 *   time (154 of 237), and five in 0.31 s all tore in 1 run of 8; nine tries never did in 20
 *   runs (none went past the fifth).
 *   An invalid object handle on a healthy token (key deleted and re-created) first just drops
 *   the cached handle and searches again; only a key or token that stays missing costs a
 *   (rate-limited) re-initialisation, which briefly pauses the module's other keys: the price
 *   of seeing tokens and keys that SoftHSM only notices after C_Initialize (see below).
 *
 * What SoftHSM2 2.6.1 does when its token directory (directories.tokendir) is renamed away
 * while a process is logged in and signing P-256 in a loop (measured on this machine):
 *   - It notices at once (within ~70 ms at ~20k sig/s): the first C_SignInit after the rename
 *     returns CKR_OBJECT_HANDLE_INVALID (the object files are re-checked on every use; no stale
 *     in-memory signing).  C_GetTokenInfo then returns CKR_GENERAL_ERROR, C_FindObjects finds
 *     nothing, yet C_GetSlotList still lists the token and C_GetSessionInfo still says
 *     "logged in".  So C_GetSlotList is useless as a liveness probe; C_GetTokenInfo is the
 *     cheap one that tells "key deleted" (token fine) from "token gone" (CKR_GENERAL_ERROR).
 *   - Renaming the directory back does NOT revive the running instance: C_SignInit keeps
 *     failing (CKR_OBJECT_HANDLE_INVALID) and C_GetTokenInfo keeps failing until C_Finalize +
 *     C_Initialize.  While the directory is absent, C_Initialize itself fails with
 *     CKR_GENERAL_ERROR (and the library stays uninitialised: later calls say
 *     CKR_CRYPTOKI_NOT_INITIALIZED); once it is back, C_Initialize + login + find succeed.
 *   - Tokens created after C_Initialize are invisible until the next C_Initialize.  Objects
 *     created by other processes on a known token are usually found by C_FindObjects at once,
 *     but a key deleted and re-created (pkcs11-tool, python-pkcs11) while this process keeps
 *     searching for it stayed invisible here until C_Finalize + C_Initialize.
 *   Hence the design: no probe per signature (SoftHSM reports the loss itself on the next use of
 *   the token object).  Signing uses a session copy of the key when the token allows one (it
 *   is much faster, see key_copy), which SoftHSM never re-checks, so the token object behind
 *   it is used once per KEY_CHECK_NS (100 ms) in its stead, by one signer: the loss shows
 *   within 100 ms, as the same errors.  On such an error, C_GetTokenInfo decides between re-finding the key and
 *   re-initialising; a failed C_Initialize after an earlier success is reported as
 *   BP11_ERR_TOKEN_NOT_FOUND ("token storage gone"); a missing token or key also earns a
 *   re-initialisation; all re-initialisations are rate-limited to one per interval (except
 *   while a token settles, see Recovery).
 *
 * What SoftHSM2 2.6.1 does when processes start together on one token (source read, and the
 * system calls seen with strace: ftruncate, F_UNLCK, then write):
 *   Every successful C_Login rewrites token.object (Token::loginUser -> setTokenFlags ->
 *   ObjectFile::store), and ObjectFile::writeAttributes truncates the file, then releases its
 *   fcntl lock; the new contents (buffered by stdio) reach the file only at fclose.  A process
 *   in C_Initialize that was waiting for that lock wakes to an empty token.object:
 *   ObjectFile::refresh marks it invalid, so OSToken is invalid and ObjectStore skips the token
 *   ("Failed to open token"); the slot list lacks it until the next C_Initialize.  Processes
 *   that start together (dnssec-signzone pairs, named next to a CLI command) hit this about one
 *   time in four.  The same window met later in C_Initialize (Token::Token reading the user PIN
 *   blob) leaves the token listed but C_Login says CKR_USER_PIN_NOT_INITIALIZED; an initialised
 *   process can see C_GetTokenInfo or C_Login fail with CKR_GENERAL_ERROR.  The file is read
 *   empty (or short: attributes missing, "corrupt"), so this shows as a missing token or user
 *   PIN, not as a wrong PIN.
 *   A process that already signs does not read token.object at all (strace: the KEY_CHECK_NS
 *   check and C_FindObjects read the key's object file and the token's generation file), so
 *   logins elsewhere cannot tear its signing: 0 failed of ~2.5 million signatures during
 *   ~74,000 logins (bench/bench_torn_read.py).  It meets the window only when it initialises
 *   or logs in again (a key re-created or not yet visible, a pool emptied by failures): its
 *   C_Initialize blocks on the fcntl lock of a login in progress and wakes into the truncated
 *   file, so under a tight login loop most such re-initialisations missed the token, and
 *   when settling was once per process the signer then failed every call for seconds (one
 *   re-initialisation per RETRY_INTERVAL_NS, each torn again).  Hence settling is re-armed by
 *   every success, not spent for good by the first.
 */
#define _GNU_SOURCE
#include "bp11.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define POOL_MAX 8                        /* sessions per token */
#define RETRY_INTERVAL_NS 1000000000LL    /* at most one re-initialisation per module per second */
#define FIRST_RETRY_NS 100000000LL        /* ... unless it signed since the last one: then 100 ms */
#define PIN_MAX 256
#define CACHE_BUCKETS 256
#define SIG_MAX_INPUT (19 + 64)           /* longest DigestInfo prefix + SHA-512 digest */
#define KEY_CHECK_NS 100000000LL          /* a session copy's token object is re-checked this often */
#define SETTLE_TRIES 9                    /* re-initialisations for a token not yet used (see Recovery) */
#define SETTLE_PAUSE_NS 10000000LL        /* before the first of them; doubled 4 times, then kept */
#define SETTLE_DOUBLINGS 4                /* 10, 20, 40, 80, then 160 ms: 950 ms in all */

/* Internal outcomes of one sign attempt; the public code to report if they end the call is
 * kept in tl_pending. */
#define RC_RECOVER (-1)                   /* re-initialise the module, then retry once */
#define RC_RETRY (-2)                     /* retry once without re-initialising */

/* ------------------------------------------------------------------------------------------ */
/* Errors: one thread-local line and CKR per thread.                                           */

static __thread char tl_msg[512];
static __thread unsigned long tl_ckr;
static __thread int tl_pending;

static void clear_error(void)
{
    tl_msg[0] = '\0';
    tl_ckr = 0;
    tl_pending = BP11_ERR_PKCS11;
}

static int set_error(int code, CK_RV ckr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int set_error(int code, CK_RV ckr, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(tl_msg, sizeof tl_msg, fmt, ap);
    va_end(ap);
    tl_ckr = ckr;
    return code;
}

/* Record `pending` as the code to report if the retry does not help either. */
static int defer(int rc, int pending)
{
    tl_pending = pending;
    return rc;
}

static const struct {
    CK_RV rv;
    const char *name;
} CKR_NAMES[] = {
    {CKR_OK, "CKR_OK"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_INVALID, "CKR_PIN_INVALID"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
    {CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
    {CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"},
    {CKR_USER_ANOTHER_ALREADY_LOGGED_IN, "CKR_USER_ANOTHER_ALREADY_LOGGED_IN"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
    {CKR_FUNCTION_REJECTED, "CKR_FUNCTION_REJECTED"},
};

static const char *ckr_name(CK_RV rv)
{
    for (size_t i = 0; i < sizeof CKR_NAMES / sizeof CKR_NAMES[0]; i++)
        if (CKR_NAMES[i].rv == rv)
            return CKR_NAMES[i].name;
    return "CKR_(vendor or unlisted)";
}

/* What a CKR means to the shim.  This is the one place where return values are interpreted. */
enum verdict {
    V_OK,
    V_GONE,            /* token, session, login or library state lost: re-initialise */
    V_HANDLE,          /* object handle stale: key deleted/re-created, or the token is gone */
    V_NOT_LOGGED_IN,   /* login state lost (someone logged out) or never had a PIN */
    V_PIN_INCORRECT,
    V_PIN_LOCKED,
    V_MECHANISM,
    V_BUFFER,
    V_OTHER
};

static enum verdict classify(CK_RV rv)
{
    switch (rv) {
    case CKR_OK:
    case CKR_USER_ALREADY_LOGGED_IN: /* login is per application: someone beat us to it */
        return V_OK;
    case CKR_DEVICE_REMOVED:
    case CKR_DEVICE_ERROR:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_GENERAL_ERROR: /* what SoftHSM says once its token storage has vanished */
        return V_GONE;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
        return V_HANDLE;
    case CKR_USER_NOT_LOGGED_IN:
        return V_NOT_LOGGED_IN;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
        return V_PIN_INCORRECT;
    case CKR_PIN_LOCKED:
        return V_PIN_LOCKED;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_KEY_TYPE_INCONSISTENT:
        return V_MECHANISM;
    case CKR_BUFFER_TOO_SMALL:
        return V_BUFFER;
    default:
        return V_OTHER;
    }
}

/* Turn a failed CKR into the message "<where>: <call> failed: CKR_X (0xNN)" and a result:
 * a public code, or RC_RECOVER for the "gone" family (public code kept for the last retry). */
static int fail_ckr(CK_RV rv, const char *where, const char *call)
{
    static const int public_code[] = {
        [V_OK] = BP11_OK,
        [V_GONE] = BP11_ERR_TOKEN_NOT_FOUND,
        [V_HANDLE] = BP11_ERR_KEY_NOT_FOUND,
        [V_NOT_LOGGED_IN] = BP11_ERR_PKCS11,
        [V_PIN_INCORRECT] = BP11_ERR_PIN_INCORRECT,
        [V_PIN_LOCKED] = BP11_ERR_PIN_LOCKED,
        [V_MECHANISM] = BP11_ERR_MECHANISM,
        [V_BUFFER] = BP11_ERR_BUFFER,
        [V_OTHER] = BP11_ERR_PKCS11,
    };
    enum verdict v = classify(rv);
    int code = public_code[v];

    set_error(code, rv, "%s: %s failed: %s (0x%lx)", where, call, ckr_name(rv), (unsigned long)rv);
    if (v == V_GONE || v == V_HANDLE || v == V_NOT_LOGGED_IN)
        return defer(RC_RECOVER, code);
    return code;
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers.                                                                               */

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Zero memory that held a PIN in a way the compiler may not drop. */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;

    while (n--)
        *v++ = 0;
}

/* A byte string (decoded URI value, PIN, ...); `set` tells "absent" from "empty". */
struct value {
    unsigned char *p;
    size_t n;
    int set;
};

static void value_free(struct value *v, int secret)
{
    if (v->p && secret)
        wipe(v->p, v->n);
    free(v->p);
    memset(v, 0, sizeof *v);
}

static int value_equal(const struct value *a, const struct value *b)
{
    return a->set == b->set && a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

static int value_copy(struct value *dst, const struct value *src)
{
    *dst = *src;
    if (!src->set)
        return 0;
    dst->p = malloc(src->n + 1);
    if (!dst->p)
        return -1;
    memcpy(dst->p, src->p, src->n);
    dst->p[src->n] = '\0';
    return 0;
}

/* Does a blank-padded CK_TOKEN_INFO field equal the URI value? */
static int padded_equal(const unsigned char *field, size_t width, const struct value *v)
{
    size_t n = width;

    while (n > 0 && field[n - 1] == ' ')
        n--;
    return v->n == n && memcmp(field, v->p, n) == 0;
}

/* Printable form of a token field for messages (trailing blanks dropped). */
static void padded_str(char *out, size_t outlen, const unsigned char *field, size_t width)
{
    size_t n = width;

    while (n > 0 && field[n - 1] == ' ')
        n--;
    snprintf(out, outlen, "%.*s", (int)n, (const char *)field);
}

/* ------------------------------------------------------------------------------------------ */
/* RFC 7512 URIs.                                                                               */

struct uri {
    struct value token, serial, model, manufacturer, slot_id, object, id, type;
};

/* The path attributes that select a token and a key.  Other query attributes are ignored. */
static const struct {
    const char *name;
    size_t off;
} URI_ATTRS[] = {
    {"token", offsetof(struct uri, token)},
    {"serial", offsetof(struct uri, serial)},
    {"model", offsetof(struct uri, model)},
    {"manufacturer", offsetof(struct uri, manufacturer)},
    {"slot-id", offsetof(struct uri, slot_id)},
    {"object", offsetof(struct uri, object)},
    {"id", offsetof(struct uri, id)},
    {"type", offsetof(struct uri, type)},
};

/* RFC 7512 attributes that name a PIN or a module: refused anywhere in a URI (any case). */
static const char *const URI_FORBIDDEN[] = {"pin-value", "pin-source", "module-path",
                                            "module-name"};

static void uri_free(struct uri *u)
{
    for (size_t i = 0; i < sizeof URI_ATTRS / sizeof URI_ATTRS[0]; i++)
        value_free((struct value *)((char *)u + URI_ATTRS[i].off), 1);
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into v (NUL-terminated for convenience; may contain NULs). */
static int pct_decode(struct value *v, const char *s, size_t n)
{
    unsigned char *out = malloc(n + 1);
    size_t j = 0;

    if (!out)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[j++] = (unsigned char)s[i];
            continue;
        }
        int h = i + 2 < n ? hex_digit(s[i + 1]) : -1;
        int l = i + 2 < n ? hex_digit(s[i + 2]) : -1;
        if (h < 0 || l < 0) {
            free(out);
            return -1;
        }
        out[j++] = (unsigned char)(h << 4 | l);
        i += 2;
    }
    out[j] = '\0';
    v->p = out;
    v->n = j;
    v->set = 1;
    return 0;
}

/* One "name=value" segment of the path (query == 0) or of the query (query == 1).  Query
 * values are never quoted in messages: they may be a PIN. */
static int uri_segment(struct uri *u, const char *seg, size_t len, int query)
{
    const char *eq = memchr(seg, '=', len);
    size_t nlen = eq ? (size_t)(eq - seg) : len;

    if (len == 0)
        return BP11_OK; /* tolerate "a=b;;c=d" and a trailing separator */
    for (size_t i = 0; i < sizeof URI_FORBIDDEN / sizeof URI_FORBIDDEN[0]; i++)
        if (strlen(URI_FORBIDDEN[i]) == nlen && strncasecmp(URI_FORBIDDEN[i], seg, nlen) == 0)
            return set_error(BP11_ERR_URI, 0, "URI: '%s' is not allowed in a key's URI: the PIN "
                             "comes only from PKCS11_LIBRARY_PIN or PKCS11_LIBRARY_PIN_FILE and "
                             "the module only from PKCS11_LIBRARY_PATH; remove it from the URI "
                             "(the key file's Label, dnssec-keyfromlabel's -l)",
                             URI_FORBIDDEN[i]);
    if (!eq && query)
        return set_error(BP11_ERR_URI, 0, "URI: a query attribute has no '='"); /* may be a PIN */
    if (!eq)
        return set_error(BP11_ERR_URI, 0, "URI: attribute '%.*s' has no '='", (int)nlen, seg);
    for (size_t i = 0; i < sizeof URI_ATTRS / sizeof URI_ATTRS[0]; i++) {
        if (strlen(URI_ATTRS[i].name) != nlen || memcmp(URI_ATTRS[i].name, seg, nlen) != 0)
            continue;
        if (query)
            return set_error(BP11_ERR_URI, 0, "URI: '%s' belongs in the path part (before '?')",
                             URI_ATTRS[i].name);
        struct value *v = (struct value *)((char *)u + URI_ATTRS[i].off);
        if (v->set)
            return set_error(BP11_ERR_URI, 0, "URI: attribute '%s' given twice", URI_ATTRS[i].name);
        if (pct_decode(v, eq + 1, len - nlen - 1) != 0)
            return set_error(BP11_ERR_URI, 0, "URI: bad percent-encoding in '%s'",
                             URI_ATTRS[i].name);
        return BP11_OK;
    }
    if (query)
        return BP11_OK; /* other query attributes do not change which key is meant */
    return set_error(BP11_ERR_URI, 0, "URI: unsupported path attribute '%.*s'", (int)nlen, seg);
}

/* Split `s` at `sep` and feed each segment to uri_segment. */
static int uri_segments(struct uri *u, const char *s, size_t len, char sep, int query)
{
    while (len > 0) {
        const char *end = memchr(s, sep, len);
        size_t seg = end ? (size_t)(end - s) : len;
        int rc = uri_segment(u, s, seg, query);

        if (rc != BP11_OK)
            return rc;
        s += seg;
        len -= seg;
        if (len > 0) {
            s++;
            len--;
        }
    }
    return BP11_OK;
}

static int uri_validate(const struct uri *u)
{
    if (u->type.set && strcmp((const char *)u->type.p, "private") != 0)
        return set_error(BP11_ERR_URI, 0, "URI: type=%s cannot sign; use type=private or omit it",
                         (const char *)u->type.p);
    if (u->slot_id.set) {
        if (u->slot_id.n == 0 || strspn((const char *)u->slot_id.p, "0123456789") != u->slot_id.n)
            return set_error(BP11_ERR_URI, 0, "URI: slot-id must be a decimal number");
    }
    if (!u->token.set && !u->serial.set && !u->slot_id.set)
        return set_error(BP11_ERR_URI, 0, "URI names no token: add token= (or serial=, slot-id=)");
    if (!u->object.set && !u->id.set)
        return set_error(BP11_ERR_URI, 0, "URI names no key: add object= and/or id=");
    return BP11_OK;
}

static int uri_parse(struct uri *u, const char *s)
{
    static const char scheme[] = "pkcs11:";
    const char *q;
    int rc;

    memset(u, 0, sizeof *u);
    if (strncmp(s, scheme, sizeof scheme - 1) != 0)
        return set_error(BP11_ERR_URI, 0, "URI does not start with 'pkcs11:'");
    s += sizeof scheme - 1;
    q = strchr(s, '?');
    rc = uri_segments(u, s, q ? (size_t)(q - s) : strlen(s), ';', 0);
    if (rc == BP11_OK && q)
        rc = uri_segments(u, q + 1, strlen(q + 1), '&', 1);
    if (rc == BP11_OK)
        rc = uri_validate(u);
    if (rc != BP11_OK)
        uri_free(u);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* PINs.                                                                                        */

enum pin_kind { PIN_NONE, PIN_ENV_VALUE, PIN_ENV_FILE };

/* Read the first line of a PIN file (trailing CR/LF dropped). */
static int pin_read_file(struct value *pin, const char *path)
{
    char buf[PIN_MAX + 2];
    size_t n = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return set_error(BP11_ERR_CONFIG, 0, "cannot read PIN file %s: %s", path, strerror(errno));
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    char *nl = memchr(buf, '\n', n);
    if (nl)
        n = (size_t)(nl - buf);
    else if (n > PIN_MAX)
        n = PIN_MAX + 1;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    int rc = BP11_OK;
    if (n == 0 || n > PIN_MAX)
        rc = set_error(BP11_ERR_CONFIG, 0, "PIN file %s: %s", path, n ? "PIN too long" : "empty");
    else if (!(pin->p = malloc(n + 1)))
        rc = set_error(BP11_ERR_CONFIG, 0, "out of memory");
    else {
        memcpy(pin->p, buf, n);
        pin->p[n] = '\0';
        pin->n = n;
        pin->set = 1;
    }
    wipe(buf, sizeof buf);
    return rc;
}

/* Where the PIN comes from: PKCS11_LIBRARY_PIN, else the file named by PKCS11_LIBRARY_PIN_FILE
 * (never the URI: see uri_segment). */
static enum pin_kind pin_kind_for(void)
{
    if (getenv("PKCS11_LIBRARY_PIN"))
        return PIN_ENV_VALUE;
    if (getenv("PKCS11_LIBRARY_PIN_FILE"))
        return PIN_ENV_FILE;
    return PIN_NONE;
}

/* Read the PIN once from its source. */
static int pin_load(enum pin_kind kind, struct value *pin)
{
    const char *env;

    memset(pin, 0, sizeof *pin);
    switch (kind) {
    case PIN_ENV_VALUE: {
        env = getenv("PKCS11_LIBRARY_PIN");
        struct value v = {(unsigned char *)env, env ? strlen(env) : 0, 1};
        if (v.n == 0)
            return set_error(BP11_ERR_CONFIG, 0, "PKCS11_LIBRARY_PIN is set but empty");
        return value_copy(pin, &v) == 0 ? BP11_OK : set_error(BP11_ERR_CONFIG, 0, "out of memory");
    }
    case PIN_ENV_FILE:
        env = getenv("PKCS11_LIBRARY_PIN_FILE");
        if (!env || env[0] == '\0')
            return set_error(BP11_ERR_CONFIG, 0, "PKCS11_LIBRARY_PIN_FILE is set but empty");
        return pin_read_file(pin, env);
    default:
        return BP11_OK;
    }
}

static const char *pin_origin(enum pin_kind kind)
{
    switch (kind) {
    case PIN_ENV_VALUE: return "PKCS11_LIBRARY_PIN";
    case PIN_ENV_FILE: return "the file named by PKCS11_LIBRARY_PIN_FILE";
    default: return "no PIN configured";
    }
}

/* Tokens whose PIN was rejected, by physical identity ("module|serial|label").  Kept for the
 * life of the process, across bp11_finalize: a wrong PIN is tried once, never again, because
 * smart cards lock after a few tries. */
struct sticky {
    struct sticky *next;
    int code;
    char ident[];
};

static pthread_mutex_t g_sticky_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sticky *g_sticky;

static int sticky_get(const char *ident)
{
    int code = BP11_OK;

    pthread_mutex_lock(&g_sticky_lock);
    for (struct sticky *s = g_sticky; s; s = s->next)
        if (strcmp(s->ident, ident) == 0)
            code = s->code;
    pthread_mutex_unlock(&g_sticky_lock);
    return code;
}

static void sticky_add(const char *ident, int code)
{
    struct sticky *s = malloc(sizeof *s + strlen(ident) + 1);

    if (!s)
        return;
    s->code = code;
    strcpy(s->ident, ident);
    pthread_mutex_lock(&g_sticky_lock);
    s->next = g_sticky;
    g_sticky = s;
    pthread_mutex_unlock(&g_sticky_lock);
}

/* ------------------------------------------------------------------------------------------ */
/* State.                                                                                       */

struct module {
    struct module *next;
    char *path;
    void *dl;
    CK_FUNCTION_LIST_PTR f;
    pthread_rwlock_t rw;
    pthread_mutex_t mu;          /* guards `tokens` */
    struct token *tokens;
    /* Guarded by rw: read by signers, written under the write lock (or g_lock at creation). */
    unsigned long gen;           /* bumped by every C_Initialize attempt */
    int live;                    /* the last C_Initialize succeeded */
    int ever_live;               /* it succeeded once: a later failure means the token went away */
    int owns_init;               /* we initialised it (not CKR_CRYPTOKI_ALREADY_INITIALIZED) */
    CK_RV init_rv;
    int64_t last_init_ns;
    int signed_since_init;       /* a signature succeeded in this generation (atomic flag) */
};

struct token {
    struct token *next;
    struct module *mod;
    struct value label, serial, model, manufacturer; /* selector from the URI */
    int has_slot;
    CK_SLOT_ID want_slot;
    enum pin_kind pin_kind;
    struct value pin;            /* the PIN itself; unset: do not log in */
    char name[64];               /* "token 'dnssec'" for messages */
    char desc[160];              /* "token 'dnssec' (module /usr/lib/...)" */
    int settle_spent;            /* settled, and no success since then (atomic flag) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Guarded by mu; meaningful only while state_gen == mod->gen. */
    unsigned long state_gen;
    CK_SLOT_ID slot;
    char ident[128];             /* physical identity, for the sticky bad-PIN list */
    CK_SESSION_HANDLE idle[POOL_MAX];
    int nidle, nopen;
};

struct keyinfo {
    CK_OBJECT_HANDLE handle;     /* what C_SignInit gets: the session copy, else token_handle */
    CK_OBJECT_HANDLE token_handle; /* the key object on the token */
    CK_KEY_TYPE type;
    size_t siglen;               /* 0: unknown, let C_Sign say */
};

struct key {
    struct key *next;            /* hash chain */
    char *uri;
    struct token *tok;
    struct value object, id;
    char desc[160];              /* "key 'zsk-1' on token 'dnssec'" */
    pthread_mutex_t find_mu;     /* one key_find (and so one session copy) at a time */
    /* Guarded by tok->mu. */
    unsigned long info_gen;      /* info.handle is valid while info_gen == mod->gen */
    struct keyinfo info;
    int64_t checked_ns;          /* when a signer last re-checked the token object (copies only) */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct module *g_modules;
static struct key *g_cache[CACHE_BUCKETS];

/* ------------------------------------------------------------------------------------------ */
/* Modules.                                                                                     */

/* C_Initialize (caller holds the write lock, or g_lock while the module is still private). */
static void module_initialize(struct module *m)
{
    CK_C_INITIALIZE_ARGS args;
    CK_RV rv;

    memset(&args, 0, sizeof args);
    args.flags = CKF_OS_LOCKING_OK; /* many sessions from many threads */
    rv = m->f->C_Initialize(&args);
    m->gen++;
    m->last_init_ns = now_ns();
    __atomic_store_n(&m->signed_since_init, 0, __ATOMIC_RELAXED);
    m->init_rv = rv;
    m->live = rv == CKR_OK || rv == CKR_CRYPTOKI_ALREADY_INITIALIZED;
    m->owns_init = rv == CKR_OK;
    m->ever_live |= m->live;
}

static void module_free(struct module *m);

/* dlopen + C_GetFunctionList + C_Initialize; caller holds g_lock. */
static int module_open(const char *path, struct module **out)
{
    struct module *m = calloc(1, sizeof *m);
    CK_C_GetFunctionList get;
    pthread_rwlockattr_t ra;

    if (!m || !(m->path = strdup(path))) {
        free(m);
        return set_error(BP11_ERR_MODULE, 0, "out of memory");
    }
    pthread_rwlockattr_init(&ra);
#ifdef __GLIBC__
    /* glibc prefers readers by default: a steady stream of signers would starve recovery. */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
#endif
    pthread_rwlock_init(&m->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&m->mu, NULL);
    if (!(m->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL))) {
        set_error(BP11_ERR_MODULE, 0, "cannot load PKCS#11 module %s: %s", path, dlerror());
        module_free(m);
        return BP11_ERR_MODULE;
    }
    get = (CK_C_GetFunctionList)dlsym(m->dl, "C_GetFunctionList");
    CK_RV rv = get ? get(&m->f) : CKR_FUNCTION_FAILED;
    if (rv != CKR_OK || !m->f) {
        set_error(BP11_ERR_MODULE, rv, "%s is not a PKCS#11 module (C_GetFunctionList: %s)", path,
                  get ? ckr_name(rv) : "missing");
        module_free(m);
        return BP11_ERR_MODULE;
    }
    module_initialize(m);
    *out = m;
    return BP11_OK;
}

/* The error for "the module is not initialised", worded for the token the caller wanted. */
static int module_down(const struct module *m, const struct token *t)
{
    if (!m->ever_live)
        return set_error(BP11_ERR_MODULE, m->init_rv, "%s: C_Initialize failed: %s (0x%lx)",
                         t->desc, ckr_name(m->init_rv), (unsigned long)m->init_rv);
    return set_error(BP11_ERR_TOKEN_NOT_FOUND, m->init_rv,
                     "%s is unavailable: re-initialising the module failed with %s (0x%lx); the "
                     "token or its storage went away; retrying at most once per second",
                     t->desc, ckr_name(m->init_rv), (unsigned long)m->init_rv);
}

/* Find the module for `path` or open it; caller holds g_lock. */
static int module_get(const char *path, struct module **out)
{
    for (struct module *m = g_modules; m; m = m->next) {
        if (strcmp(m->path, path) == 0) {
            *out = m;
            return BP11_OK;
        }
    }
    int rc = module_open(path, out);
    if (rc == BP11_OK) {
        (*out)->next = g_modules;
        g_modules = *out;
    }
    return rc;
}

/* Forget every session and handle of the old generation; caller holds the write lock, so no
 * thread is mid-sign and no session is borrowed.  C_Finalize closes the sessions themselves. */
static void module_forget_sessions(struct module *m)
{
    pthread_mutex_lock(&m->mu);
    for (struct token *t = m->tokens; t; t = t->next) {
        pthread_mutex_lock(&t->mu);
        t->state_gen = 0;
        t->nidle = t->nopen = 0;
        pthread_mutex_unlock(&t->mu);
    }
    pthread_mutex_unlock(&m->mu);
}

/* Re-initialise the module unless another thread already did since `seen_gen`, or (when
 * rate_limited) the last attempt was less than RETRY_INTERVAL_NS ago (then the caller reports
 * the failure at once).
 * A module that signed since its last initialisation is failing for the first time: that
 * failure earns a re-initialisation after FIRST_RETRY_NS already (a token pulled right after
 * named started is then reported as missing, not as a stale handle). */
static void module_recover(struct module *m, unsigned long seen_gen, int rate_limited)
{
    pthread_rwlock_wrlock(&m->rw);
    int64_t since = now_ns() - m->last_init_ns;
    if (m->gen == seen_gen && (!rate_limited || since >= RETRY_INTERVAL_NS ||
                               (since >= FIRST_RETRY_NS && m->signed_since_init))) {
        module_forget_sessions(m);
        if (m->live)
            (void)m->f->C_Finalize(NULL); /* outcome irrelevant: we initialise again next */
        module_initialize(m);
    }
    pthread_rwlock_unlock(&m->rw);
}

static void token_free(struct token *t);

static void module_free(struct module *m)
{
    struct token *t, *next;

    for (t = m->tokens; t; t = next) {
        next = t->next;
        token_free(t);
    }
    if (m->dl)
        dlclose(m->dl);
    pthread_rwlock_destroy(&m->rw);
    pthread_mutex_destroy(&m->mu);
    free(m->path);
    free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Tokens: selection, login, session pool.                                                     */

static int token_matches(const struct token *t, CK_SLOT_ID slot, const CK_TOKEN_INFO *ti)
{
    if (t->has_slot && slot != t->want_slot)
        return 0;
    if (t->label.set && !padded_equal(ti->label, sizeof ti->label, &t->label))
        return 0;
    if (t->serial.set && !padded_equal(ti->serialNumber, sizeof ti->serialNumber, &t->serial))
        return 0;
    if (t->model.set && !padded_equal(ti->model, sizeof ti->model, &t->model))
        return 0;
    if (t->manufacturer.set &&
        !padded_equal(ti->manufacturerID, sizeof ti->manufacturerID, &t->manufacturer))
        return 0;
    return 1;
}

/* Find the one slot whose token matches.  A miss asks for recovery: SoftHSM (and other
 * modules) only notice tokens that appeared after C_Initialize when initialised again. */
static int token_find_slot(struct token *t, CK_SLOT_ID *slot, CK_TOKEN_INFO *info)
{
    CK_FUNCTION_LIST_PTR f = t->mod->f;
    CK_SLOT_ID slots[64];
    CK_ULONG n = sizeof slots / sizeof slots[0];
    int found = 0;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);

    if (rv != CKR_OK)
        return fail_ckr(rv, t->desc, "C_GetSlotList");
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
            continue; /* a token that vanished since C_GetSlotList simply does not match */
        if (!token_matches(t, slots[i], &ti))
            continue;
        if (found++ == 0) {
            *slot = slots[i];
            *info = ti;
        }
    }
    if (found > 1)
        return set_error(BP11_ERR_URI, 0, "%s: the URI matches %d tokens; add serial= to choose "
                         "one", t->desc, found);
    if (found == 0) {
        set_error(BP11_ERR_TOKEN_NOT_FOUND, 0, "%s not found", t->desc);
        return defer(RC_RECOVER, BP11_ERR_TOKEN_NOT_FOUND);
    }
    return BP11_OK;
}

/* Token flags worth telling an operator who just typed a wrong PIN. */
static const char *pin_flags_text(CK_FLAGS flags)
{
    if (flags & CKF_USER_PIN_LOCKED)
        return " [token reports: user PIN locked]";
    if (flags & CKF_USER_PIN_FINAL_TRY)
        return " [token reports: final try, the next wrong PIN locks it]";
    if (flags & CKF_USER_PIN_COUNT_LOW)
        return " [token reports: PIN count low]";
    return "";
}

static int pin_rejected(struct token *t, int code, CK_RV rv)
{
    CK_TOKEN_INFO ti;
    CK_FLAGS flags = t->mod->f->C_GetTokenInfo(t->slot, &ti) == CKR_OK ? ti.flags : 0;

    sticky_add(t->ident, code);
    if (code == BP11_ERR_PIN_LOCKED)
        return set_error(code, rv, "%s: the user PIN is locked (%s); unlock it with the SO PIN; "
                         "the shim will not try to log in again%s", t->desc, ckr_name(rv),
                         pin_flags_text(flags));
    return set_error(code, rv, "%s: PIN incorrect (%s, PIN from %s); check the PIN; the shim will "
                     "not try again in this process, so the token cannot lock%s", t->desc,
                     ckr_name(rv), pin_origin(t->pin_kind), pin_flags_text(flags));
}

/* May we log in at all?  Never with a PIN that this process saw rejected, nor into a locked PIN. */
static int token_login_allowed(struct token *t, const CK_TOKEN_INFO *ti)
{
    int sticky = sticky_get(t->ident);

    if (!t->pin.set)
        return BP11_OK;
    if (sticky != BP11_OK)
        return set_error(sticky, 0, "%s: its PIN was rejected earlier in this process; not trying "
                         "again (a wrong PIN can lock the token); fix the PIN, then restart",
                         t->desc);
    if (ti->flags & CKF_USER_PIN_LOCKED)
        return pin_rejected(t, BP11_ERR_PIN_LOCKED, CKR_PIN_LOCKED);
    return BP11_OK;
}

/* Log in once per generation (login state is per application, shared by all sessions). */
static int token_login(struct token *t, CK_SESSION_HANDLE s)
{
    if (!t->pin.set)
        return BP11_OK; /* keys that need no login still work; others report it clearly */
    CK_RV rv = t->mod->f->C_Login(s, CKU_USER, t->pin.p, (CK_ULONG)t->pin.n);
    switch (classify(rv)) {
    case V_OK:
        return BP11_OK;
    case V_PIN_INCORRECT:
        return pin_rejected(t, BP11_ERR_PIN_INCORRECT, rv);
    case V_PIN_LOCKED:
        return pin_rejected(t, BP11_ERR_PIN_LOCKED, rv);
    default:
        break;
    }
    int rc = fail_ckr(rv, t->desc, "C_Login");
    /* SoftHSM also says this when its C_Initialize read token.object while another process
     * rewrote it (an empty user PIN blob): worth a re-initialisation (see torn_read_suspected). */
    return rv == CKR_USER_PIN_NOT_INITIALIZED ? defer(RC_RECOVER, rc) : rc;
}

/* Make the token usable in generation `gen`: find it, open the first session, log in.
 * Caller holds tok->mu (other borrowers wait; this runs once per generation). */
static int token_setup(struct token *t, unsigned long gen)
{
    CK_FUNCTION_LIST_PTR f = t->mod->f;
    CK_TOKEN_INFO ti;
    CK_SESSION_HANDLE s;
    char label[33], serial[17];
    int rc = token_find_slot(t, &t->slot, &ti);

    if (rc != BP11_OK)
        return rc;
    padded_str(label, sizeof label, ti.label, sizeof ti.label);
    padded_str(serial, sizeof serial, ti.serialNumber, sizeof ti.serialNumber);
    snprintf(t->ident, sizeof t->ident, "%s|%s|%s", t->mod->path, serial, label);
    if ((rc = token_login_allowed(t, &ti)) != BP11_OK)
        return rc;
    CK_RV rv = f->C_OpenSession(t->slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
    if (rv != CKR_OK)
        return fail_ckr(rv, t->desc, "C_OpenSession");
    rc = token_login(t, s);
    if (rc != BP11_OK) {
        (void)f->C_CloseSession(s); /* best effort; the error that matters is rc */
        return rc;
    }
    t->idle[0] = s;
    t->nidle = t->nopen = 1;
    t->state_gen = gen;
    return BP11_OK;
}

/* Borrow a session (opening one if the pool is below POOL_MAX, waiting if all are busy) and
 * copy the key's cached info if it belongs to this generation (info->handle 0 otherwise).
 * *check says that this signer is the one to re-check the token object of a session copy. */
static int pool_get(struct key *k, unsigned long gen, CK_SESSION_HANDLE *s, struct keyinfo *info,
                    int *check)
{
    struct token *t = k->tok;
    int rc = BP11_OK, open_new = 0;

    pthread_mutex_lock(&t->mu);
    if (t->state_gen != gen)
        rc = token_setup(t, gen);
    if (rc == BP11_OK) {
        while (t->nidle == 0 && t->nopen >= POOL_MAX)
            pthread_cond_wait(&t->cv, &t->mu);
        if (t->nidle > 0)
            *s = t->idle[--t->nidle];
        else {
            t->nopen++; /* reserve the slot; open outside the lock */
            open_new = 1;
        }
        *info = k->info;
        *check = 0;
        if (k->info_gen != gen)
            info->handle = CK_INVALID_HANDLE;
        else if (info->handle != info->token_handle) {
            int64_t now = now_ns();
            if (now - k->checked_ns >= KEY_CHECK_NS) {
                k->checked_ns = now;
                *check = 1;
            }
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != BP11_OK || !open_new)
        return rc;
    CK_RV rv = t->mod->f->C_OpenSession(t->slot, CKF_SERIAL_SESSION, NULL, NULL, s);
    if (rv == CKR_OK)
        return BP11_OK;
    pthread_mutex_lock(&t->mu);
    t->nopen--;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return fail_ckr(rv, t->desc, "C_OpenSession");
}

static void pool_put(struct token *t, CK_SESSION_HANDLE s)
{
    pthread_mutex_lock(&t->mu);
    t->idle[t->nidle++] = s;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Drop a session that failed: it may hold an unfinished operation or be dead already.
 * Closing an application's last session logs it out, so then the next borrower logs in again. */
static void pool_drop(struct token *t, CK_SESSION_HANDLE s)
{
    (void)t->mod->f->C_CloseSession(s); /* best effort: the session is being abandoned */
    pthread_mutex_lock(&t->mu);
    if (--t->nopen == 0)
        t->state_gen = 0;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* Cheap liveness probe: SoftHSM keeps listing a vanished token in C_GetSlotList, but
 * C_GetTokenInfo fails (CKR_GENERAL_ERROR) once its storage is gone. */
static int token_alive(const struct token *t)
{
    CK_TOKEN_INFO ti;

    return t->mod->f->C_GetTokenInfo(t->slot, &ti) == CKR_OK;
}

static void token_free(struct token *t)
{
    value_free(&t->label, 0);
    value_free(&t->serial, 0);
    value_free(&t->model, 0);
    value_free(&t->manufacturer, 0);
    value_free(&t->pin, 1);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

/* ------------------------------------------------------------------------------------------ */
/* Keys.                                                                                        */

/* The curves the shim knows, by their DER CKA_EC_PARAMS (an OID or, for EdDSA, SoftHSM's
 * PrintableString name): signature size, and the DNSKEY key type and public key size
 * (keytype 0: no DNSSEC algorithm uses the curve). */
static const struct curve {
    const char *der;
    size_t len, siglen;
    int keytype;
    size_t publen;
} CURVES[] = {
    {"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10, 64, BP11_KEY_EC_P256, 64},  /* P-256 */
    {"\x06\x05\x2b\x81\x04\x00\x22", 7, 96, BP11_KEY_EC_P384, 96},               /* P-384 */
    {"\x06\x05\x2b\x81\x04\x00\x23", 7, 132, 0, 132},                            /* P-521 */
    {"\x06\x03\x2b\x65\x70", 5, 64, BP11_KEY_ED25519, 32},                       /* Ed25519 */
    {"\x06\x03\x2b\x65\x71", 5, 114, BP11_KEY_ED448, 57},                        /* Ed448 */
    {"\x13\x0c" "edwards25519", 14, 64, BP11_KEY_ED25519, 32},
    {"\x13\x0a" "edwards448", 12, 114, BP11_KEY_ED448, 57},
};

static const struct curve *curve_of(const unsigned char *p, CK_ULONG n)
{
    for (size_t i = 0; i < sizeof CURVES / sizeof CURVES[0]; i++)
        if (n == CURVES[i].len && memcmp(p, CURVES[i].der, n) == 0)
            return &CURVES[i];
    return NULL;
}

/* Signature size from the DER curve parameters (0: unknown curve). */
static size_t ec_siglen(const unsigned char *p, CK_ULONG n)
{
    const struct curve *c = curve_of(p, n);

    return c ? c->siglen : 0;
}

/* Key type and signature size, so the caller's buffer is checked before C_Sign. */
static int key_read_info(struct key *k, CK_SESSION_HANDLE s, struct keyinfo *info)
{
    CK_FUNCTION_LIST_PTR f = k->tok->mod->f;
    unsigned char params[64];
    CK_ATTRIBUTE type = {CKA_KEY_TYPE, &info->type, sizeof info->type};
    CK_ATTRIBUTE size;
    CK_RV rv = f->C_GetAttributeValue(s, info->handle, &type, 1);

    if (rv != CKR_OK)
        return fail_ckr(rv, k->desc, "C_GetAttributeValue(CKA_KEY_TYPE)");
    info->siglen = 0;
    if (info->type == CKK_RSA) {
        size = (CK_ATTRIBUTE){CKA_MODULUS, NULL, 0}; /* length only */
        if (f->C_GetAttributeValue(s, info->handle, &size, 1) == CKR_OK)
            info->siglen = size.ulValueLen;
    } else if (info->type == CKK_EC || info->type == CKK_EC_EDWARDS) {
        size = (CK_ATTRIBUTE){CKA_EC_PARAMS, params, sizeof params};
        if (f->C_GetAttributeValue(s, info->handle, &size, 1) == CKR_OK)
            info->siglen = ec_siglen(params, size.ulValueLen);
    }
    return BP11_OK; /* an unknown size is not an error: C_Sign will say */
}

/* Sign with a session copy of the key (CKA_TOKEN false) when the token allows one, as
 * pkcs11-provider does: SoftHSM 2.6.1 re-reads and re-checks a token object from disk at every
 * C_SignInit (about 22 system calls), a session object not at all, so P-256 signs about 1.4 x
 * faster (bench/raw_csign.c "copy").  The copy is as sensitive and unextractable as the
 * original and lives in the token (for SoftHSM: this process's memory) until the session that
 * made it closes; other sessions of this process may use it.  A token that refuses the copy
 * (no C_CopyObject, CKA_COPYABLE false) keeps being signed with the token object.  What the copy
 * no longer shows (the token or the key going away) is re-checked on the token object every
 * KEY_CHECK_NS, see sign_live. */
static void key_copy(struct key *k, CK_SESSION_HANDLE s, struct keyinfo *info)
{
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE session_only = {CKA_TOKEN, &no, sizeof no};
    CK_OBJECT_HANDLE copy;

    if (k->tok->mod->f->C_CopyObject(s, info->token_handle, &session_only, 1, &copy) == CKR_OK)
        info->handle = copy;
}

/* C_FindObjects for exactly one private key with the URI's label and/or id. */
static int key_find(struct key *k, CK_SESSION_HANDLE s, struct keyinfo *info)
{
    CK_FUNCTION_LIST_PTR f = k->tok->mod->f;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL on_token = CK_TRUE; /* never our own session copies (key_copy) */
    CK_ATTRIBUTE tmpl[4] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_TOKEN, &on_token, sizeof on_token}};
    CK_ULONG nt = 2, found = 0;
    CK_OBJECT_HANDLE h[2];

    if (k->object.set)
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_LABEL, k->object.p, k->object.n};
    if (k->id.set)
        tmpl[nt++] = (CK_ATTRIBUTE){CKA_ID, k->id.p, k->id.n};
    CK_RV rv = f->C_FindObjectsInit(s, tmpl, nt);
    if (rv != CKR_OK)
        return fail_ckr(rv, k->desc, "C_FindObjectsInit");
    rv = f->C_FindObjects(s, h, 2, &found);
    CK_RV rv2 = f->C_FindObjectsFinal(s);
    if (rv == CKR_OK)
        rv = rv2;
    if (rv != CKR_OK)
        return fail_ckr(rv, k->desc, "C_FindObjects");
    if (found > 1)
        return set_error(BP11_ERR_URI, 0, "%s: the URI matches more than one private key; add id= "
                         "to choose one", k->desc);
    if (found == 0) {
        if (!token_alive(k->tok)) {
            set_error(BP11_ERR_TOKEN_NOT_FOUND, 0, "%s is no longer usable (C_GetTokenInfo fails)",
                      k->tok->desc);
            return defer(RC_RECOVER, BP11_ERR_TOKEN_NOT_FOUND);
        }
        set_error(BP11_ERR_KEY_NOT_FOUND, 0, "%s not found (module %s)%s", k->desc,
                  k->tok->mod->path, k->tok->pin.set ? "" : "; no PIN is configured and private "
                  "keys stay hidden until login");
        /* SoftHSM can miss a key that another process created while we were searching, until
         * the next C_Initialize: a missing key also earns a (rate-limited) re-initialisation. */
        return defer(RC_RECOVER, BP11_ERR_KEY_NOT_FOUND);
    }
    info->handle = info->token_handle = h[0];
    int rc = key_read_info(k, s, info);
    if (rc == BP11_OK)
        key_copy(k, s, info);
    return rc;
}

/* Remember what key_find (or C_Sign) learnt, for every thread, in this generation; gen 0
 * forgets the handle so the next signer looks the key up again. */
static void key_store(struct key *k, unsigned long gen, const struct keyinfo *info)
{
    pthread_mutex_lock(&k->tok->mu);
    k->info = *info;
    k->info_gen = gen;
    pthread_mutex_unlock(&k->tok->mu);
}

static void key_free(struct key *k)
{
    value_free(&k->object, 0);
    value_free(&k->id, 0);
    pthread_mutex_destroy(&k->find_mu);
    free(k->uri);
    free(k);
}

/* ------------------------------------------------------------------------------------------ */
/* Resolving a URI to its key (cache miss path, under g_lock).                                 */

static void describe_token(struct token *t)
{
    if (t->label.set)
        snprintf(t->name, sizeof t->name, "token '%s'", (const char *)t->label.p);
    else if (t->serial.set)
        snprintf(t->name, sizeof t->name, "token with serial '%s'", (const char *)t->serial.p);
    else
        snprintf(t->name, sizeof t->name, "token in slot %lu", (unsigned long)t->want_slot);
    snprintf(t->desc, sizeof t->desc, "%s (module %s)", t->name, t->mod->path);
}

static void describe_key(struct key *k)
{
    char id[41] = "";

    for (size_t i = 0; k->id.set && i < k->id.n && i < 20; i++)
        sprintf(id + 2 * i, "%02x", k->id.p[i]);
    if (k->object.set && k->id.set)
        snprintf(k->desc, sizeof k->desc, "key '%s' id %s on %s", (const char *)k->object.p, id,
                 k->tok->name);
    else if (k->object.set)
        snprintf(k->desc, sizeof k->desc, "key '%s' on %s", (const char *)k->object.p,
                 k->tok->name);
    else
        snprintf(k->desc, sizeof k->desc, "key id %s on %s", id, k->tok->name);
}

static int token_same(const struct token *t, const struct uri *u, enum pin_kind kind)
{
    CK_SLOT_ID slot = u->slot_id.set ? strtoul((const char *)u->slot_id.p, NULL, 10) : 0;

    return value_equal(&t->label, &u->token) && value_equal(&t->serial, &u->serial) &&
           value_equal(&t->model, &u->model) && value_equal(&t->manufacturer, &u->manufacturer) &&
           t->has_slot == u->slot_id.set && t->want_slot == slot && t->pin_kind == kind;
}

static int token_create(struct module *m, struct uri *u, enum pin_kind kind, struct value *pin,
                        struct token **out)
{
    struct token *t = calloc(1, sizeof *t);

    if (!t)
        return set_error(BP11_ERR_CONFIG, 0, "out of memory");
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (value_copy(&t->label, &u->token) || value_copy(&t->serial, &u->serial) ||
        value_copy(&t->model, &u->model) || value_copy(&t->manufacturer, &u->manufacturer)) {
        token_free(t);
        return set_error(BP11_ERR_CONFIG, 0, "out of memory");
    }
    t->mod = m;
    t->has_slot = u->slot_id.set;
    t->want_slot = t->has_slot ? strtoul((const char *)u->slot_id.p, NULL, 10) : 0;
    t->pin_kind = kind;
    t->pin = *pin;
    memset(pin, 0, sizeof *pin);
    describe_token(t);
    *out = t;
    return BP11_OK;
}

/* The token struct for this selector and PIN source, created (PIN read once) if new. */
static int token_get(struct module *m, struct uri *u, struct token **out)
{
    enum pin_kind kind = pin_kind_for();
    struct value pin;
    int rc;

    pthread_mutex_lock(&m->mu);
    for (struct token *t = m->tokens; t; t = t->next) {
        if (token_same(t, u, kind)) {
            pthread_mutex_unlock(&m->mu);
            *out = t;
            return BP11_OK;
        }
    }
    pthread_mutex_unlock(&m->mu);
    rc = pin_load(kind, &pin);
    if (rc == BP11_OK)
        rc = token_create(m, u, kind, &pin, out);
    value_free(&pin, 1);
    if (rc != BP11_OK)
        return rc;
    pthread_mutex_lock(&m->mu);
    (*out)->next = m->tokens;
    m->tokens = *out;
    pthread_mutex_unlock(&m->mu);
    return BP11_OK;
}

/* The module comes only from the environment (never the URI: see uri_segment). */
static int module_path_for(const char **path)
{
    *path = getenv("PKCS11_LIBRARY_PATH");
    if (!*path)
        return set_error(BP11_ERR_CONFIG, 0, "no PKCS#11 module: set PKCS11_LIBRARY_PATH");
    if (!**path)
        return set_error(BP11_ERR_CONFIG, 0, "PKCS11_LIBRARY_PATH is set but empty");
    return BP11_OK;
}

static unsigned cache_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    while (*s)
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h % CACHE_BUCKETS;
}

/* Parse the URI, load its module, token (and PIN) and create the key entry; caller holds g_lock. */
static int key_create(const char *uristr, struct key **out)
{
    struct uri u;
    struct module *m;
    struct token *t = NULL;
    const char *path;
    int rc = uri_parse(&u, uristr);

    if (rc != BP11_OK)
        return rc;
    if ((rc = module_path_for(&path)) == BP11_OK && (rc = module_get(path, &m)) == BP11_OK &&
        (rc = token_get(m, &u, &t)) == BP11_OK) {
        struct key *k = calloc(1, sizeof *k);
        if (k)
            pthread_mutex_init(&k->find_mu, NULL);
        if (!k || !(k->uri = strdup(uristr)) || value_copy(&k->object, &u.object) ||
            value_copy(&k->id, &u.id)) {
            if (k)
                key_free(k);
            rc = set_error(BP11_ERR_CONFIG, 0, "out of memory");
        } else {
            k->tok = t;
            describe_key(k);
            *out = k;
        }
    }
    uri_free(&u);
    return rc;
}

static int key_resolve(const char *uri, struct key **out)
{
    unsigned h = cache_hash(uri);
    int rc = BP11_OK;

    pthread_mutex_lock(&g_lock);
    for (*out = g_cache[h]; *out && strcmp((*out)->uri, uri) != 0; *out = (*out)->next)
        ;
    if (!*out && (rc = key_create(uri, out)) == BP11_OK) {
        (*out)->next = g_cache[h];
        g_cache[h] = *out;
    }
    pthread_mutex_unlock(&g_lock);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Signing.                                                                                     */

static const struct mech {
    const char *name;
    CK_MECHANISM_TYPE ckm;
    CK_KEY_TYPE key_type;
    size_t digest_len;                 /* 0: any length */
    const unsigned char *prefix;       /* DER DigestInfo up to the digest (RSA only) */
    size_t prefix_len;
} MECHS[] = {
    [BP11_MECH_RSA_SHA1] = {"RSA-SHA1", CKM_RSA_PKCS, CKK_RSA, 20, (const unsigned char *)
        "\x30\x21\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00\x04\x14", 15},
    [BP11_MECH_RSA_SHA256] = {"RSA-SHA256", CKM_RSA_PKCS, CKK_RSA, 32, (const unsigned char *)
        "\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20", 19},
    [BP11_MECH_RSA_SHA512] = {"RSA-SHA512", CKM_RSA_PKCS, CKK_RSA, 64, (const unsigned char *)
        "\x30\x51\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x03\x05\x00\x04\x40", 19},
    [BP11_MECH_ECDSA] = {"ECDSA", CKM_ECDSA, CKK_EC, 0, NULL, 0},
    [BP11_MECH_EDDSA] = {"EdDSA", CKM_EDDSA, CKK_EC_EDWARDS, 0, NULL, 0},
};

static int check_args(int mech, const unsigned char *in, size_t inlen, unsigned char *sig,
                      size_t *siglen)
{
    if (mech < BP11_MECH_RSA_SHA1 || mech > BP11_MECH_EDDSA)
        return set_error(BP11_ERR_MECHANISM, 0, "unknown mechanism %d", mech);
    if (!sig || !siglen)
        return set_error(BP11_ERR_BUFFER, 0, "no signature buffer given");
    if (!in && inlen > 0)
        return set_error(BP11_ERR_MECHANISM, 0, "no input data given");
    if (MECHS[mech].digest_len && inlen != MECHS[mech].digest_len)
        return set_error(BP11_ERR_MECHANISM, 0, "%s needs a %zu-byte digest, got %zu bytes",
                         MECHS[mech].name, MECHS[mech].digest_len, inlen);
    if (mech == BP11_MECH_ECDSA && (inlen == 0 || inlen > 64))
        return set_error(BP11_ERR_MECHANISM, 0, "ECDSA needs a digest of 1..64 bytes, got %zu",
                         inlen);
    return BP11_OK;
}

static const char *key_type_name(CK_KEY_TYPE t)
{
    return t == CKK_RSA ? "an RSA" : t == CKK_EC ? "an EC" : t == CKK_EC_EDWARDS ? "an EdDSA" : "a";
}

/* Does this key fit this mechanism and the caller's buffer? */
static int check_key(const struct key *k, const struct keyinfo *info, int mech, size_t *siglen)
{
    if (info->type != MECHS[mech].key_type)
        return set_error(BP11_ERR_MECHANISM, 0, "%s is %s key; %s cannot use it", k->desc,
                         key_type_name(info->type), MECHS[mech].name);
    if (info->siglen && *siglen < info->siglen) {
        *siglen = info->siglen;
        return set_error(BP11_ERR_BUFFER, 0, "%s: signature needs %zu bytes", k->desc,
                         info->siglen);
    }
    return BP11_OK;
}

/* C_SignInit + C_Sign; for RSA the input is the DigestInfo built here. */
static CK_RV token_sign(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, int mech,
                        const unsigned char *in, size_t inlen, unsigned char *sig, size_t *siglen,
                        const char **call)
{
    const struct mech *m = &MECHS[mech];
    CK_MECHANISM ckm = {m->ckm, NULL, 0};
    unsigned char buf[SIG_MAX_INPUT];
    CK_ULONG outlen = (CK_ULONG)*siglen;
    CK_RV rv;

    if (m->prefix) {
        memcpy(buf, m->prefix, m->prefix_len);
        memcpy(buf + m->prefix_len, in, inlen);
        in = buf;
        inlen += m->prefix_len;
    }
    *call = "C_SignInit";
    if ((rv = f->C_SignInit(s, &ckm, h)) != CKR_OK)
        return rv;
    *call = "C_Sign";
    rv = f->C_Sign(s, (CK_BYTE_PTR)in, (CK_ULONG)inlen, sig, &outlen);
    if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL)
        *siglen = outlen; /* otherwise keep the caller's size intact for the retry */
    return rv;
}

/* Interpret a failed C_SignInit/C_Sign (the session has already been dropped). */
static int sign_failed(struct key *k, unsigned long gen, struct keyinfo *info, CK_RV rv,
                       const char *call, size_t *siglen)
{
    struct token *t = k->tok;
    enum verdict v = classify(rv);

    if (v == V_BUFFER) {
        info->siglen = *siglen; /* C_Sign told us; remember it, no second call next time */
        key_store(k, gen, info);
        return set_error(BP11_ERR_BUFFER, rv, "%s: signature needs %zu bytes", k->desc, *siglen);
    }
    if (v == V_HANDLE && token_alive(t)) {
        key_store(k, 0, info); /* key deleted or re-created: find it again, no re-init */
        set_error(BP11_ERR_KEY_NOT_FOUND, rv, "%s: handle no longer valid", k->desc);
        return defer(RC_RETRY, BP11_ERR_KEY_NOT_FOUND);
    }
    if (v == V_NOT_LOGGED_IN && !t->pin.set)
        return set_error(BP11_ERR_CONFIG, rv, "%s needs a login but no PIN is configured (set "
                         "PKCS11_LIBRARY_PIN_FILE or PKCS11_LIBRARY_PIN)", k->desc);
    if (v == V_HANDLE) { /* the handle died because the token did */
        set_error(BP11_ERR_TOKEN_NOT_FOUND, rv, "%s: %s failed with %s and C_GetTokenInfo fails: "
                  "the token is gone", k->desc, call, ckr_name(rv));
        return defer(RC_RECOVER, BP11_ERR_TOKEN_NOT_FOUND);
    }
    return fail_ckr(rv, k->desc, call);
}

/* One operation on a key that has been found: it owns the borrowed session and hands it back
 * (pool_put when healthy, pool_drop after a failure that may have hurt it). */
typedef int (*key_op)(struct key *k, unsigned long gen, CK_SESSION_HANDLE s,
                      const struct keyinfo *info, void *arg);

/* One attempt in generation `gen`, caller holds mod->rw for reading. */
static int run_live(struct key *k, unsigned long gen, key_op op, void *arg)
{
    struct token *t = k->tok;
    struct keyinfo info;
    CK_SESSION_HANDLE s;
    int check;
    int rc = pool_get(k, gen, &s, &info, &check);

    if (rc != BP11_OK)
        return rc;
    if (check) {
        /* A session copy signs on after its token object is deleted or its token's storage
         * goes away; asking for the object's class re-reads it (SoftHSM fails this exactly
         * as C_SignInit on the object would), so that loss is seen within KEY_CHECK_NS. */
        CK_OBJECT_CLASS cls;
        CK_ATTRIBUTE probe = {CKA_CLASS, &cls, sizeof cls};
        CK_RV rv = t->mod->f->C_GetAttributeValue(s, info.token_handle, &probe, 1);
        if (rv != CKR_OK) {
            size_t unused = 0; /* no buffer in play: C_GetAttributeValue(CKA_CLASS) */
            (void)t->mod->f->C_DestroyObject(s, info.handle); /* best effort: a stale copy */
            pool_put(t, s);
            return sign_failed(k, gen, &info, rv, "C_GetAttributeValue", &unused);
        }
    }
    if (info.handle == CK_INVALID_HANDLE) {
        /* One finder per key: threads starting together would each make a session copy. */
        pthread_mutex_lock(&k->find_mu);
        pthread_mutex_lock(&t->mu);
        if (k->info_gen == gen)
            info = k->info; /* found by the thread we waited for */
        pthread_mutex_unlock(&t->mu);
        if (info.handle == CK_INVALID_HANDLE) {
            if ((rc = key_find(k, s, &info)) != BP11_OK) {
                pthread_mutex_unlock(&k->find_mu);
                pool_put(t, s); /* the search is over; if the token died, recovery resets all */
                return rc;
            }
            key_store(k, gen, &info);
        }
        pthread_mutex_unlock(&k->find_mu);
    }
    return op(k, gen, s, &info, arg);
}

static int run_attempt(struct key *k, key_op op, void *arg, unsigned long *gen)
{
    struct module *m = k->tok->mod;
    int rc;

    pthread_rwlock_rdlock(&m->rw);
    *gen = m->gen;
    if (m->live)
        rc = run_live(k, *gen, op, arg);
    else
        rc = defer(RC_RECOVER, module_down(m, k->tok));
    pthread_rwlock_unlock(&m->rw);
    return rc;
}

/* The token answered: a call succeeded, or key_find found the token healthy (C_GetTokenInfo
 * fine) but not the key, as while another process re-creates it.  Its next token-level failure
 * may then be a torn read again (a re-initialisation while another process logs in) and earns
 * settling.  Not bounded in time: with the key re-created every 0.35 s under a tight login loop
 * (the "re-created key" case of bench/bench_torn_read.py), re-arming only 1 s after the last
 * settling still failed ~200,000 signatures in 2 of 3 runs; re-arming at once, none in 3.  And
 * "key not found" counts as an answer: when only a success re-armed, a settling that ended on
 * the half-re-created key spent the budget, and the next torn re-initialisation failed with
 * "token no longer usable" (1 run in 6 with two CPU burners beside the test).  A token that is
 * really absent never answers, so it still settles once and then fails fast. */
static int token_answered(int rc)
{
    return rc == BP11_OK || (rc == RC_RECOVER && tl_pending == BP11_ERR_KEY_NOT_FOUND);
}

/* Costs one relaxed load per answered call, a store only when it re-arms. */
static void settle_rearm(struct token *t)
{
    if (__atomic_load_n(&t->settle_spent, __ATOMIC_RELAXED))
        __atomic_store_n(&t->settle_spent, 0, __ATOMIC_RELAXED);
}

/* Could this failure be SoftHSM having read token.object while another process rewrote it?
 * Then the token is missing from the slot list, or its C_GetTokenInfo, C_Login or
 * C_OpenSession fails as if it were gone, or C_Login finds no user PIN. */
static int torn_read_suspected(int rc)
{
    return rc == RC_RECOVER &&
           (tl_pending == BP11_ERR_TOKEN_NOT_FOUND || tl_ckr == CKR_USER_PIN_NOT_INITIALIZED);
}

/* One attempt on a key.  A token-level failure (torn_read_suspected) may be SoftHSM reading
 * token.object while another process rewrites it: unless the token's settling is spent,
 * re-initialise, unthrottled, up to SETTLE_TRIES times with growing pauses (see "Recovery").
 * Settling is spent when it ends and re-armed whenever the token answers (token_answered: a
 * success, or the token healthy but the key not found), so a token that is really absent
 * settles once and then fails fast, and a token costs at most one settling per answer; a key
 * missing from a healthy token never settles. */
static int run_settling(struct key *k, key_op op, void *arg, unsigned long *gen)
{
    struct token *t = k->tok;
    int rc = run_attempt(k, op, arg, gen);

    if (torn_read_suspected(rc) && !__atomic_load_n(&t->settle_spent, __ATOMIC_RELAXED)) {
        for (int i = 0; i < SETTLE_TRIES && torn_read_suspected(rc); i++) {
            int64_t pause = SETTLE_PAUSE_NS << (i < SETTLE_DOUBLINGS ? i : SETTLE_DOUBLINGS);
            struct timespec ts = {pause / 1000000000LL, pause % 1000000000LL};
            nanosleep(&ts, NULL); /* let the other process finish writing; an EINTR only shortens it */
            module_recover(t->mod, *gen, 0);
            rc = run_attempt(k, op, arg, gen);
        }
        __atomic_store_n(&t->settle_spent, 1, __ATOMIC_RELAXED); /* until the token answers */
    }
    if (token_answered(rc))
        settle_rearm(t);
    return rc;
}

/* Resolve `uri` and run `op` on its key; a lost token, session or login earns one
 * re-initialisation of the module and one retry (see "Recovery" above). */
static int run_on_key(const char *uri, key_op op, void *arg)
{
    struct key *k;
    unsigned long gen;
    int rc;

    if ((rc = key_resolve(uri, &k)) != BP11_OK)
        return rc;
    for (int attempt = 0; attempt < 2; attempt++) {
        rc = run_settling(k, op, arg, &gen); /* the retry too: its re-initialisation can tear */
        if (rc == BP11_OK)
            clear_error(); /* a retry succeeded: the first attempt's complaint is history */
        if (rc >= 0)
            return rc;
        if (rc == RC_RECOVER && attempt == 0)
            module_recover(k->tok->mod, gen, 1);
    }
    return tl_pending; /* the retry failed too; tl_msg says why */
}

struct sign_req {
    int mech;
    const unsigned char *in;
    size_t inlen;
    unsigned char *sig;
    size_t *siglen;
};

static int op_sign(struct key *k, unsigned long gen, CK_SESSION_HANDLE s,
                   const struct keyinfo *found, void *arg)
{
    struct sign_req *r = arg;
    struct keyinfo info = *found;
    const char *call;
    int rc = check_key(k, &info, r->mech, r->siglen);

    if (rc != BP11_OK) {
        pool_put(k->tok, s);
        return rc;
    }
    CK_RV rv = token_sign(k->tok->mod->f, s, info.handle, r->mech, r->in, r->inlen, r->sig,
                          r->siglen, &call);
    if (rv == CKR_OK) {
        pool_put(k->tok, s);
        __atomic_store_n(&k->tok->mod->signed_since_init, 1, __ATOMIC_RELAXED);
        return BP11_OK;
    }
    pool_drop(k->tok, s);
    return sign_failed(k, gen, &info, rv, call, r->siglen);
}

/* ------------------------------------------------------------------------------------------ */
/* Public keys (for dnssec-keyfromlabel): the DNSKEY public-key field of a token key pair.      */

#define ATTR_MAX 1024                     /* RSA-8192 modulus; DER EC points are far smaller */

struct pub_req {
    int *keytype;
    unsigned char *out;
    size_t *outlen;
};

/* C_GetAttributeValue of one attribute into buf.  *len 0 with BP11_OK: the object does not
 * have it, or will not show it (absent, sensitive, unavailable). */
static int attr_read(struct key *k, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                     CK_ATTRIBUTE_TYPE type, const char *name, unsigned char *buf, size_t *len)
{
    CK_ATTRIBUTE a = {type, buf, ATTR_MAX};
    CK_RV rv = k->tok->mod->f->C_GetAttributeValue(s, h, &a, 1);

    *len = 0;
    if (rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_ATTRIBUTE_SENSITIVE ||
        (rv == CKR_OK && a.ulValueLen == CK_UNAVAILABLE_INFORMATION))
        return BP11_OK;
    if (rv == CKR_BUFFER_TOO_SMALL)
        return set_error(BP11_ERR_BUFFER, rv, "%s: %s is larger than %d bytes", k->desc, name,
                         ATTR_MAX);
    if (rv != CKR_OK) {
        char call[64];
        snprintf(call, sizeof call, "C_GetAttributeValue(%s)", name);
        return fail_ckr(rv, k->desc, call);
    }
    *len = a.ulValueLen;
    return BP11_OK;
}

/* Count the public keys matching tmpl[0..n) (at most 2), keeping the first. */
static int public_search(struct key *k, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
                         CK_OBJECT_HANDLE *h, CK_ULONG *found)
{
    CK_FUNCTION_LIST_PTR f = k->tok->mod->f;
    CK_OBJECT_HANDLE hs[2];
    CK_RV rv = f->C_FindObjectsInit(s, tmpl, n);

    *found = 0;
    if (rv != CKR_OK)
        return fail_ckr(rv, k->desc, "C_FindObjectsInit");
    rv = f->C_FindObjects(s, hs, 2, found);
    CK_RV rv2 = f->C_FindObjectsFinal(s);
    if (rv == CKR_OK)
        rv = rv2;
    if (rv != CKR_OK)
        return fail_ckr(rv, k->desc, "C_FindObjects");
    *h = hs[0];
    return BP11_OK;
}

/* The public key object of the pair: same CKA_ID as the private key (what pkcs11-tool and
 * bindpkcs11 give both halves), narrowed or replaced by the URI's object label. */
static int public_find(struct key *k, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
                       CK_OBJECT_HANDLE *h)
{
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    unsigned char id[ATTR_MAX];
    size_t idlen;
    CK_ATTRIBUTE tmpl[3] = {{CKA_CLASS, &cls, sizeof cls}};
    CK_ULONG found = 0;
    int rc = attr_read(k, s, priv, CKA_ID, "CKA_ID", id, &idlen);

    if (rc != BP11_OK)
        return rc;
    if (idlen > 0) {
        tmpl[1] = (CK_ATTRIBUTE){CKA_ID, id, idlen};
        if ((rc = public_search(k, s, tmpl, 2, h, &found)) != BP11_OK)
            return rc;
        if (found == 1)
            return BP11_OK;
    }
    if (k->object.set) {
        CK_ULONG n = idlen > 0 && found > 1 ? 3 : 2;
        tmpl[n - 1] = (CK_ATTRIBUTE){CKA_LABEL, k->object.p, k->object.n};
        if ((rc = public_search(k, s, tmpl, n, h, &found)) != BP11_OK)
            return rc;
        if (found == 1)
            return BP11_OK;
    }
    if (found > 1)
        return set_error(BP11_ERR_URI, 0, "%s: more than one public key matches its CKA_ID and "
                         "label; give the pair a unique id", k->desc);
    return set_error(BP11_ERR_KEY_NOT_FOUND, 0, "%s: the token holds no public key with the "
                     "same CKA_ID or label, so its DNSKEY cannot be read; store the public key "
                     "of the pair on the token", k->desc);
}

/* Strip the DER OCTET STRING around a CKA_EC_POINT, if there is one that spans it exactly. */
static void point_unwrap(const unsigned char *p, size_t n, const unsigned char **in, size_t *inlen)
{
    size_t len = 0, hdr = 0;

    if (n >= 2 && p[0] == 0x04) {
        if (p[1] < 0x80)
            len = p[1], hdr = 2;
        else if (p[1] == 0x81 && n >= 3)
            len = p[2], hdr = 3;
        else if (p[1] == 0x82 && n >= 4)
            len = (size_t)p[2] << 8 | p[3], hdr = 4;
    }
    *in = p, *inlen = n;
    if (hdr && hdr + len == n)
        *in = p + hdr, *inlen = len;
}

/* The DNSKEY form of a CKA_EC_POINT: x||y of an uncompressed ECDSA point, the raw EdDSA key.
 * The spec says DER OCTET STRING, some tokens give the bare point: try the DER reading first. */
static int point_to_dnskey(struct key *k, const struct curve *c, const unsigned char *p,
                           size_t n, unsigned char *out, size_t *outlen)
{
    int ec = c->keytype == BP11_KEY_EC_P256 || c->keytype == BP11_KEY_EC_P384;
    const unsigned char *cand[2];
    size_t candlen[2];

    point_unwrap(p, n, &cand[0], &candlen[0]);
    cand[1] = p, candlen[1] = n;
    for (int i = 0; i < 2; i++) {
        const unsigned char *q = cand[i];
        size_t m = candlen[i];
        if (ec && m == c->publen + 1 && q[0] == 0x04)
            q++, m--;
        if (m != c->publen)
            continue;
        if (*outlen < m) {
            *outlen = m;
            return set_error(BP11_ERR_BUFFER, 0, "%s: public key needs %zu bytes", k->desc, m);
        }
        memcpy(out, q, m);
        *outlen = m;
        return BP11_OK;
    }
    return set_error(BP11_ERR_PKCS11, 0, "%s: CKA_EC_POINT (%zu bytes) is not an uncompressed "
                     "point of the key's curve", k->desc, n);
}

static size_t strip_zeros(const unsigned char **p, size_t n)
{
    while (n > 1 && (*p)[0] == 0)
        (*p)++, n--;
    return n;
}

/* RFC 3110: exponent length, exponent, modulus. */
static int rsa_to_dnskey(struct key *k, const unsigned char *e, size_t elen,
                         const unsigned char *mod, size_t modlen, unsigned char *out,
                         size_t *outlen)
{
    elen = strip_zeros(&e, elen);
    modlen = strip_zeros(&mod, modlen);
    size_t hdr = elen < 256 ? 1 : 3, need = hdr + elen + modlen;

    if (*outlen < need) {
        *outlen = need;
        return set_error(BP11_ERR_BUFFER, 0, "%s: public key needs %zu bytes", k->desc, need);
    }
    if (hdr == 1)
        out[0] = (unsigned char)elen;
    else
        out[0] = 0, out[1] = (unsigned char)(elen >> 8), out[2] = (unsigned char)elen;
    memcpy(out + hdr, e, elen);
    memcpy(out + hdr + elen, mod, modlen);
    *outlen = need;
    return BP11_OK;
}

static int public_rsa(struct key *k, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
                      struct pub_req *r)
{
    unsigned char mod[ATTR_MAX], e[ATTR_MAX];
    size_t modlen, elen;
    CK_OBJECT_HANDLE pub;
    int rc = attr_read(k, s, priv, CKA_MODULUS, "CKA_MODULUS", mod, &modlen);

    if (rc == BP11_OK)
        rc = attr_read(k, s, priv, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT", e, &elen);
    if (rc == BP11_OK && (modlen == 0 || elen == 0)) {
        if ((rc = public_find(k, s, priv, &pub)) == BP11_OK &&
            (rc = attr_read(k, s, pub, CKA_MODULUS, "CKA_MODULUS", mod, &modlen)) == BP11_OK)
            rc = attr_read(k, s, pub, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT", e, &elen);
        if (rc == BP11_OK && (modlen == 0 || elen == 0))
            rc = set_error(BP11_ERR_PKCS11, 0, "%s: the token shows no RSA modulus and public "
                           "exponent for it", k->desc);
    }
    if (rc != BP11_OK)
        return rc;
    *r->keytype = BP11_KEY_RSA;
    return rsa_to_dnskey(k, e, elen, mod, modlen, r->out, r->outlen);
}

static int public_ec(struct key *k, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
                     struct pub_req *r)
{
    unsigned char params[ATTR_MAX], point[ATTR_MAX];
    size_t plen, ptlen;
    CK_OBJECT_HANDLE pub;
    const struct curve *c;
    int rc = attr_read(k, s, priv, CKA_EC_PARAMS, "CKA_EC_PARAMS", params, &plen);

    if (rc != BP11_OK)
        return rc;
    if ((rc = public_find(k, s, priv, &pub)) != BP11_OK)
        return rc;
    if (plen == 0 && (rc = attr_read(k, s, pub, CKA_EC_PARAMS, "CKA_EC_PARAMS", params, &plen)))
        return rc;
    if ((rc = attr_read(k, s, pub, CKA_EC_POINT, "CKA_EC_POINT", point, &ptlen)) != BP11_OK)
        return rc;
    c = plen ? curve_of(params, plen) : NULL;
    if (!c || !c->keytype)
        return set_error(BP11_ERR_MECHANISM, 0, "%s: its curve has no DNSSEC algorithm (P-256, "
                         "P-384, Ed25519 and Ed448 have)", k->desc);
    if (ptlen == 0)
        return set_error(BP11_ERR_PKCS11, 0, "%s: its public key shows no CKA_EC_POINT", k->desc);
    *r->keytype = c->keytype;
    return point_to_dnskey(k, c, point, ptlen, r->out, r->outlen);
}

static int op_public(struct key *k, unsigned long gen, CK_SESSION_HANDLE s,
                     const struct keyinfo *info, void *arg)
{
    int rc;

    (void)gen;
    if (info->type == CKK_RSA)
        rc = public_rsa(k, s, info->token_handle, arg); /* the token object, not our copy */
    else if (info->type == CKK_EC || info->type == CKK_EC_EDWARDS)
        rc = public_ec(k, s, info->token_handle, arg);
    else
        rc = set_error(BP11_ERR_MECHANISM, 0, "%s is neither an RSA, EC nor EdDSA key", k->desc);
    if (rc < 0)
        pool_drop(k->tok, s); /* token, session or login trouble: recovery follows */
    else
        pool_put(k->tok, s);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Public API.                                                                                  */

int bp11_init(void)
{
    const char *path = getenv("PKCS11_LIBRARY_PATH");
    struct module *m;
    int rc;

    clear_error();
    if (!path)
        return BP11_OK; /* modules named in URIs are loaded on first use */
    if (!*path)
        return set_error(BP11_ERR_CONFIG, 0, "PKCS11_LIBRARY_PATH is set but empty");
    pthread_mutex_lock(&g_lock);
    rc = module_get(path, &m);
    if (rc == BP11_OK && !m->live)
        rc = set_error(BP11_ERR_MODULE, m->init_rv, "%s: C_Initialize failed: %s (0x%lx)", path,
                       ckr_name(m->init_rv), (unsigned long)m->init_rv);
    pthread_mutex_unlock(&g_lock);
    return rc;
}

int bp11_sign(const char *uri, int mech, const unsigned char *in, size_t inlen,
              unsigned char *sig, size_t *siglen)
{
    struct sign_req r = {mech, in, inlen, sig, siglen};
    int rc;

    clear_error();
    if (!uri)
        return set_error(BP11_ERR_URI, 0, "no URI given");
    if ((rc = check_args(mech, in, inlen, sig, siglen)) != BP11_OK)
        return rc;
    return run_on_key(uri, op_sign, &r);
}

int bp11_public_key(const char *uri, int *keytype, unsigned char *pub, size_t *publen)
{
    struct pub_req r = {keytype, pub, publen};

    clear_error();
    if (!uri)
        return set_error(BP11_ERR_URI, 0, "no URI given");
    if (!keytype || !pub || !publen)
        return set_error(BP11_ERR_BUFFER, 0, "no public key buffer given");
    return run_on_key(uri, op_public, &r);
}

int bp11_check_uri(const char *uri)
{
    struct uri u;
    int rc;

    clear_error();
    if (!uri)
        return set_error(BP11_ERR_URI, 0, "no URI given");
    if ((rc = uri_parse(&u, uri)) == BP11_OK)
        uri_free(&u);
    return rc;
}

void bp11_finalize(void)
{
    pthread_mutex_lock(&g_lock);
    for (unsigned i = 0; i < CACHE_BUCKETS; i++) {
        struct key *k, *next;
        for (k = g_cache[i]; k; k = next) {
            next = k->next;
            key_free(k);
        }
        g_cache[i] = NULL;
    }
    while (g_modules) {
        struct module *m = g_modules;
        g_modules = m->next;
        pthread_rwlock_wrlock(&m->rw);
        if (m->live && m->owns_init)
            (void)m->f->C_Finalize(NULL); /* nothing useful to do if it fails at shutdown */
        pthread_rwlock_unlock(&m->rw);
        module_free(m);
    }
    pthread_mutex_unlock(&g_lock);
}

const char *bp11_last_error(void)
{
    return tl_msg;
}

unsigned long bp11_last_ckr(void)
{
    return tl_ckr;
}

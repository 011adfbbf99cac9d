/*
 * bp11.h - sign DNSSEC data with a private key that never leaves a PKCS#11 token.
 *
 * The same source is built twice: as the cffi extension bindpkcs11._shim (Python, tests) and as
 * the plain libbp11.so that a patched BIND links.  Keys are named by RFC 7512 URIs such as
 * "pkcs11:token=dnssec;object=zsk-1".  The module comes only from PKCS11_LIBRARY_PATH and the PIN
 * only from PKCS11_LIBRARY_PIN or the file named by PKCS11_LIBRARY_PIN_FILE: a URI carrying
 * pin-value, pin-source, module-path or module-name (key URIs live in key files, and BIND logs
 * them) is refused with BP11_ERR_URI.  Messages never quote a URI's query part.  All functions
 * are thread-safe except bp11_finalize, which must not run while another thread is inside
 * bp11_sign (call it at shutdown).
 */
#ifndef BP11_H
#define BP11_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What `in` holds for each mechanism, and what the signature looks like. */
#define BP11_MECH_RSA_SHA1    1  /* in = SHA-1 digest (20 bytes); shim prepends the DER DigestInfo; CKM_RSA_PKCS */
#define BP11_MECH_RSA_SHA256  2  /* in = SHA-256 digest (32) */
#define BP11_MECH_RSA_SHA512  3  /* in = SHA-512 digest (64) */
#define BP11_MECH_ECDSA       4  /* in = digest; CKM_ECDSA; out = r||s (DNSSEC wire format as is) */
#define BP11_MECH_EDDSA       5  /* in = whole message; CKM_EDDSA; out = 64 bytes */

/* Key types reported by bp11_public_key, with the DNSKEY public-key field it returns for each. */
#define BP11_KEY_RSA      1  /* RFC 3110: exponent length (1 byte, or 0 + 2 bytes), exponent, modulus */
#define BP11_KEY_EC_P256  2  /* RFC 6605: x||y, 64 bytes */
#define BP11_KEY_EC_P384  3  /* RFC 6605: x||y, 96 bytes */
#define BP11_KEY_ED25519  4  /* RFC 8080: 32 bytes */
#define BP11_KEY_ED448    5  /* RFC 8080: 57 bytes */

/* Return codes. */
#define BP11_OK 0
#define BP11_ERR_CONFIG 1           /* no module path, unreadable pin file, bad env */
#define BP11_ERR_MODULE 2           /* dlopen / C_GetFunctionList / C_Initialize failed */
#define BP11_ERR_URI 3              /* URI does not parse, lacks token/object/id, or names a PIN or module */
#define BP11_ERR_TOKEN_NOT_FOUND 4  /* token absent (also: token went away; fail fast, but a token
                                     * not yet used in this process is first re-sought for ~0.3 s) */
#define BP11_ERR_KEY_NOT_FOUND 5
#define BP11_ERR_PIN_INCORRECT 6    /* sticky: after one failed C_Login no further login is ever attempted in this process */
#define BP11_ERR_PIN_LOCKED 7
#define BP11_ERR_BUFFER 8           /* *siglen too small; *siglen set to needed size */
#define BP11_ERR_MECHANISM 9        /* bad mech arg or token lacks it */
#define BP11_ERR_PKCS11 10          /* any other CKR_*; see bp11_last_ckr() */

/* Optional and idempotent: loads and initialises the module named by PKCS11_LIBRARY_PATH (if set)
 * so that configuration errors show at start-up.  bp11_sign loads modules lazily without it. */
int bp11_init(void);

/* Sign `in` (see BP11_MECH_*) with the key named by `uri`.  On entry *siglen is the size of `sig`;
 * on BP11_OK it is the signature length, on BP11_ERR_BUFFER the size needed. */
int bp11_sign(const char *uri, int mech, const unsigned char *in, size_t inlen,
              unsigned char *sig, size_t *siglen);

/* The public half of the key pair named by `uri`, as the public-key field of a DNSKEY record
 * (see BP11_KEY_*), so that BIND's dnssec-keyfromlabel can write K*.key for a key made elsewhere.
 * The token is found and logged in to as for bp11_sign.  RSA modulus and exponent come from the
 * private key object when it shows them, otherwise from the public key object of the pair (same
 * CKA_ID, else same CKA_LABEL); an EC or EdDSA point always comes from that public object.
 * On entry *publen is the size of `pub`; on BP11_OK it is the length written, on BP11_ERR_BUFFER
 * the size needed.  A curve without a DNSSEC algorithm is BP11_ERR_MECHANISM. */
int bp11_public_key(const char *uri, int *keytype, unsigned char *pub, size_t *publen);

/* Check a key URI as bp11_sign would (scheme, token and key selectors, no PIN or module
 * attributes) without loading any module: BP11_OK or BP11_ERR_URI with bp11_last_error(). */
int bp11_check_uri(const char *uri);

/* C_Finalize every module and free all state; a later bp11_sign starts afresh.  A PIN rejected
 * earlier stays rejected: it is never tried again in this process. */
void bp11_finalize(void);

/* The outcome of this thread's last bp11_init/bp11_sign: one line, never containing a PIN
 * ("" after success), and the CKR_* value behind it (0 if none). */
const char *bp11_last_error(void);
unsigned long bp11_last_ckr(void);

#ifdef __cplusplus
}
#endif

#endif /* BP11_H */

/*
 * raw_csign.c - the token's raw signing rate: C_SignInit + C_Sign in a tight loop.
 *
 * Part of bench/bench_signing.py, which compiles it at bench time:
 *   gcc -O2 -I/usr/include/p11-kit-1 raw_csign.c -o raw_csign -ldl -lpthread
 *
 * usage: raw_csign MODULE TOKEN_LABEL OBJECT_LABEL ecdsa|rsa SECONDS [SESSIONS [token|copy]]
 *   The user PIN is read from the file named by PKCS11_LIBRARY_PIN_FILE (first line).
 *   "copy" signs with a session copy of the key (C_CopyObject with CKA_TOKEN=false, made once,
 *   used by every session), as pkcs11-provider's key cache and the shim do; "token" (the
 *   default) signs with the token object itself, which SoftHSM re-reads from disk each time.
 *   Each of SESSIONS threads owns one session and signs a fixed SHA-256-sized input
 *   (ECDSA: 32 bytes with CKM_ECDSA; RSA: DigestInfo + 32 bytes with CKM_RSA_PKCS) for
 *   SECONDS seconds.  Prints one JSON line: signatures, seconds, rate.
 *
 * This is the honest upper bound for a single caller: no hashing, no URI lookup, no
 * locking, no session pool; one C_SignInit and one C_Sign per signature, as any
 * PKCS#11 signer (the shim, the libp11 engine) has to issue.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

static CK_FUNCTION_LIST_PTR f;
static CK_SLOT_ID slot;
static CK_OBJECT_HANDLE key;
static CK_MECHANISM mech;
static unsigned char input[64];
static CK_ULONG input_len;
static double seconds;

struct worker {
    pthread_t thread;
    CK_SESSION_HANDLE session;
    unsigned long count;
    CK_RV rv;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what, CK_RV rv)
{
    fprintf(stderr, "raw_csign: %s failed: 0x%lx\n", what, (unsigned long)rv);
    exit(1);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    unsigned char sig[1024];
    double end = now() + seconds;

    for (;;) {
        for (int i = 0; i < 32; i++) {
            CK_ULONG siglen = sizeof sig;
            CK_RV rv = f->C_SignInit(w->session, &mech, key);
            if (rv == CKR_OK)
                rv = f->C_Sign(w->session, input, input_len, sig, &siglen);
            if (rv != CKR_OK) {
                w->rv = rv;
                return NULL;
            }
            w->count++;
        }
        if (now() >= end)
            return NULL;
    }
}

static void read_pin(char *pin, size_t size)
{
    const char *path = getenv("PKCS11_LIBRARY_PIN_FILE");
    FILE *fp = path ? fopen(path, "r") : NULL;

    if (!fp || !fgets(pin, (int)size, fp)) {
        fprintf(stderr, "raw_csign: set PKCS11_LIBRARY_PIN_FILE to a readable PIN file\n");
        exit(2);
    }
    fclose(fp);
    pin[strcspn(pin, "\r\n")] = '\0';
}

int main(int argc, char **argv)
{
    static const unsigned char sha256_prefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                  0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                  0x01, 0x05, 0x00, 0x04, 0x20};
    CK_C_INITIALIZE_ARGS init = {0};
    CK_C_GetFunctionList get;
    CK_SLOT_ID slots[64];
    CK_ULONG nslots = 64, found = 0;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[2];
    char pin[256];
    void *dl;
    int nthreads, i;
    CK_RV rv;

    if (argc < 6) {
        fprintf(stderr, "usage: %s MODULE TOKEN OBJECT ecdsa|rsa SECONDS [SESSIONS [token|copy]]\n",
                argv[0]);
        return 2;
    }
    seconds = atof(argv[5]);
    nthreads = argc > 6 ? atoi(argv[6]) : 1;
    if (nthreads < 1 || nthreads > 16)
        nthreads = 1;
    for (i = 0; i < 32; i++)
        input[i] = (unsigned char)(i * 7 + 1);
    if (strcmp(argv[4], "rsa") == 0) {
        memmove(input + sizeof sha256_prefix, input, 32);
        memcpy(input, sha256_prefix, sizeof sha256_prefix);
        input_len = sizeof sha256_prefix + 32;
        mech.mechanism = CKM_RSA_PKCS;
    } else {
        input_len = 32;
        mech.mechanism = CKM_ECDSA;
    }
    read_pin(pin, sizeof pin);

    if (!(dl = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL))) {
        fprintf(stderr, "raw_csign: %s\n", dlerror());
        return 1;
    }
    get = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    if (!get || (rv = get(&f)) != CKR_OK)
        die("C_GetFunctionList", get ? rv : 0);
    init.flags = CKF_OS_LOCKING_OK;
    if ((rv = f->C_Initialize(&init)) != CKR_OK)
        die("C_Initialize", rv);
    if ((rv = f->C_GetSlotList(CK_TRUE, slots, &nslots)) != CKR_OK)
        die("C_GetSlotList", rv);
    for (CK_ULONG s = 0; s < nslots; s++) {
        CK_TOKEN_INFO ti;
        size_t n = strlen(argv[2]);
        if (f->C_GetTokenInfo(slots[s], &ti) == CKR_OK && n <= 32 &&
            memcmp(ti.label, argv[2], n) == 0 &&
            (n == 32 || ti.label[n] == ' ')) {
            slot = slots[s];
            found = 1;
            break;
        }
    }
    if (!found) {
        fprintf(stderr, "raw_csign: no token labelled %s\n", argv[2]);
        return 1;
    }

    struct worker *w = calloc((size_t)nthreads, sizeof *w);
    for (i = 0; i < nthreads; i++)
        if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &w[i].session)) != CKR_OK)
            die("C_OpenSession", rv);
    rv = f->C_Login(w[0].session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        die("C_Login", rv);

    tmpl[0].type = CKA_CLASS;
    tmpl[0].pValue = &cls;
    tmpl[0].ulValueLen = sizeof cls;
    tmpl[1].type = CKA_LABEL;
    tmpl[1].pValue = argv[3];
    tmpl[1].ulValueLen = strlen(argv[3]);
    if ((rv = f->C_FindObjectsInit(w[0].session, tmpl, 2)) != CKR_OK)
        die("C_FindObjectsInit", rv);
    if ((rv = f->C_FindObjects(w[0].session, &key, 1, &found)) != CKR_OK)
        die("C_FindObjects", rv);
    f->C_FindObjectsFinal(w[0].session);
    if (!found) {
        fprintf(stderr, "raw_csign: no private key labelled %s\n", argv[3]);
        return 1;
    }
    if (argc > 7 && strcmp(argv[7], "copy") == 0) {
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE session_only = {CKA_TOKEN, &no, sizeof no};
        CK_OBJECT_HANDLE copy;
        if ((rv = f->C_CopyObject(w[0].session, key, &session_only, 1, &copy)) != CKR_OK)
            die("C_CopyObject", rv);
        key = copy;
    }

    double start = now();
    for (i = 0; i < nthreads; i++)
        pthread_create(&w[i].thread, NULL, work, &w[i]);
    unsigned long total = 0;
    for (i = 0; i < nthreads; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].rv != CKR_OK)
            die("C_SignInit/C_Sign", w[i].rv);
        total += w[i].count;
    }
    double elapsed = now() - start;

    printf("{\"signatures\": %lu, \"seconds\": %.4f, \"rate\": %.1f, \"sessions\": %d}\n", total,
           elapsed, total / elapsed, nthreads);
    for (i = 0; i < nthreads; i++)
        f->C_CloseSession(w[i].session);
    f->C_Finalize(NULL);
    return 0;
}

/*
 * raw_bp11.c - the shim's own signing rate: bp11_sign() in a tight loop, no BIND around it.
 *
 * Part of bench/bench_signing.py, which compiles it at bench time against the libbp11.so that
 * the patched BIND links (same source, same build):
 *   gcc -O2 -I<repo>/bindpkcs11/shim raw_bp11.c -o raw_bp11 -L<lib> -lbp11 -Wl,-rpath,<lib> -lpthread
 *
 * usage: raw_bp11 URI ecdsa|rsa SECONDS [THREADS]
 *   The environment is the patched BIND's (PKCS11_LIBRARY_PATH, PKCS11_LIBRARY_PIN_FILE,
 *   SOFTHSM2_CONF).  Each thread signs a fixed 32-byte digest through bp11_sign for SECONDS
 *   seconds.  Prints one JSON line: signatures, seconds, rate.
 *
 * Set against raw_csign (bare C_SignInit + C_Sign) this isolates the shim's per-signature cost
 * (URI cache lookup, locks, session pool, DigestInfo) from BIND's.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bp11.h"

static const char *uri;
static int mech;
static double seconds;

struct worker {
    pthread_t thread;
    unsigned long count;
    int rc;
};

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    unsigned char digest[32], sig[1024];
    double end = now() + seconds;

    for (int i = 0; i < 32; i++)
        digest[i] = (unsigned char)(i * 7 + 1);
    for (;;) {
        for (int i = 0; i < 32; i++) {
            size_t siglen = sizeof sig;
            int rc = bp11_sign(uri, mech, digest, sizeof digest, sig, &siglen);
            if (rc != BP11_OK) {
                w->rc = rc;
                fprintf(stderr, "raw_bp11: %s\n", bp11_last_error());
                return NULL;
            }
            w->count++;
        }
        if (now() >= end)
            return NULL;
    }
}

int main(int argc, char **argv)
{
    int nthreads, i;

    if (argc < 4) {
        fprintf(stderr, "usage: %s URI ecdsa|rsa SECONDS [THREADS]\n", argv[0]);
        return 2;
    }
    uri = argv[1];
    mech = strcmp(argv[2], "rsa") == 0 ? BP11_MECH_RSA_SHA256 : BP11_MECH_ECDSA;
    seconds = atof(argv[3]);
    nthreads = argc > 4 ? atoi(argv[4]) : 1;
    if (nthreads < 1 || nthreads > 16)
        nthreads = 1;

    /* One signature first: module load, login and key lookup are not part of the rate. */
    {
        unsigned char digest[32] = {0}, sig[1024];
        size_t siglen = sizeof sig;
        if (bp11_sign(uri, mech, digest, sizeof digest, sig, &siglen) != BP11_OK) {
            fprintf(stderr, "raw_bp11: %s\n", bp11_last_error());
            return 1;
        }
    }

    struct worker *w = calloc((size_t)nthreads, sizeof *w);
    double start = now();
    for (i = 0; i < nthreads; i++)
        pthread_create(&w[i].thread, NULL, work, &w[i]);
    unsigned long total = 0;
    int failed = 0;
    for (i = 0; i < nthreads; i++) {
        pthread_join(w[i].thread, NULL);
        if (w[i].rc != BP11_OK)
            failed = w[i].rc;
        total += w[i].count;
    }
    double elapsed = now() - start;
    if (failed) {
        fprintf(stderr, "raw_bp11: bp11_sign failed with code %d\n", failed);
        return 1;
    }
    printf("{\"signatures\": %lu, \"seconds\": %.4f, \"rate\": %.1f, \"threads\": %d}\n", total,
           elapsed, total / elapsed, nthreads);
    bp11_finalize();
    return 0;
}

/*
 * keys.c — API keys: generation (256 bits from OpenSSL's CSPRNG, base64url), SHA-256 hashing
 * (only hashes are ever stored), and matching in constant time with CRYPTO_memcmp.
 *
 * Thread rule: every function is thread-safe (OpenSSL 1.1+/3 initialise themselves).
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "realm/server.h"
#include "realm/status.h"
#include "server/srv.h"

void srv_sha256(const void *data, size_t len, unsigned char out[32]) {
    unsigned int n = 32;
    /* EVP_Digest cannot fail for SHA-256 short of memory exhaustion inside OpenSSL; on that
     * failure we zero the digest, which matches no stored hash (hashes of real keys are never
     * all zero with any practical probability). */
    if (!EVP_Digest(data, len, out, &n, EVP_sha256(), NULL)) memset(out, 0, 32);
}

void realm_key_hash(const char *key, size_t len, char out[REALM_KEY_HASH_HEX + 1]) {
    static const char hex[] = "0123456789abcdef";
    unsigned char d[32];
    srv_sha256(key, len, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[64] = '\0';
}

int realm_key_generate(char *out, size_t cap) {
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (cap <= REALM_KEY_LEN) return REALM_E_TOO_SMALL;
    unsigned char r[33]; /* 256 random bits + one zero pad byte to make 11 groups of 3 */
    if (RAND_bytes(r, 32) != 1) return REALM_E_INTERNAL;
    r[32] = 0;
    memcpy(out, "realm-", 6);
    char *o = out + 6;
    /* 32 bytes → 43 base64url characters (the last group encodes 2 real bytes + padding) */
    for (int i = 0; i < 33; i += 3) {
        uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];
        *o++ = b64[(v >> 18) & 63];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        if (i + 3 < 33) *o++ = b64[v & 63];
    }
    *o = '\0';
    OPENSSL_cleanse(r, sizeof r);
    return (size_t)(o - out) == REALM_KEY_LEN ? REALM_OK : REALM_E_INTERNAL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int srv_hex_decode32(const char *hex, unsigned char out[32]) {
    if (strlen(hex) != 64) return -1;
    for (int i = 0; i < 32; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

bool srv_key_matches(const unsigned char digest[32], const unsigned char (*hashes)[32], size_t n) {
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found |= CRYPTO_memcmp(digest, hashes[i], 32) == 0;
    return found != 0;
}

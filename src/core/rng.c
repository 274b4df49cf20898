/* xoshiro256** (Blackman & Vigna), seeded through splitmix64. */
#include <math.h>

#include "osprey/core.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void osp_rng_seed(osp_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

void osp_rng_derive(osp_rng *r, uint64_t seed, uint64_t stream, uint64_t index) {
    /* Mix the three words through splitmix64 so that nearby (stream, index)
     * pairs give unrelated generators. */
    uint64_t x = seed;
    uint64_t a = splitmix64(&x) ^ stream;
    uint64_t b = splitmix64(&a) ^ index;
    osp_rng_seed(r, splitmix64(&b));
}

uint64_t osp_rng_u64(osp_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float osp_rng_uniform(osp_rng *r) {
    /* 24 high bits: every value is exactly representable in float */
    return (float)(osp_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

float osp_rng_normal(osp_rng *r) {
    double u1 = ((double)(osp_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(osp_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t osp_rng_below(osp_rng *r, uint64_t n) {
    /* rejection sampling removes the modulo bias */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = osp_rng_u64(r);
    while (x >= limit);
    return x % n;
}

void osp_rng_shuffle(osp_rng *r, int64_t *idx, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)osp_rng_below(r, (uint64_t)i + 1);
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

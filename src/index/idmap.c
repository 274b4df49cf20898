/* The id map (see index_impl.h): linear probing over a power-of-two table
 * kept at most half full, with backward-shift deletion. */
#include <string.h>

#include "index/index_impl.h"

static size_t id_hash(int64_t id) {
    /* splitmix64's finaliser: sequential ids spread over the table */
    uint64_t z = (uint64_t)id + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return (size_t)(z ^ (z >> 31));
}

void osp__idmap_free(osp__idmap *m) {
    osp_free(m->keys);
    osp_free(m->vals);
    memset(m, 0, sizeof *m);
}

static int rehash(osp__idmap *m, size_t cap) {
    int64_t *keys = osp_alloc(cap * sizeof *keys);
    uint64_t *vals = osp_alloc(cap * sizeof *vals);
    if (!keys || !vals) {
        osp_free(keys);
        osp_free(vals);
        return osp_error(OSP_ENOMEM, "index: out of memory for the id map (%zu entries)", cap);
    }
    memset(keys, 0xff, cap * sizeof *keys);
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] < 0) continue;
        size_t j = id_hash(m->keys[i]) & (cap - 1);
        while (keys[j] >= 0) j = (j + 1) & (cap - 1);
        keys[j] = m->keys[i];
        vals[j] = m->vals[i];
    }
    osp_free(m->keys);
    osp_free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return OSP_OK;
}

int osp__idmap_reserve(osp__idmap *m, size_t n) {
    if (n > SIZE_MAX / 4 - m->count) return osp_error(OSP_ENOMEM, "index: id map too large");
    size_t need = (m->count + n) * 2;
    if (need <= m->cap) return OSP_OK;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < need) cap *= 2;
    return rehash(m, cap);
}

int osp__idmap_get(const osp__idmap *m, int64_t id, uint64_t *val) {
    if (!m->cap || id < 0) return 0;
    size_t mask = m->cap - 1;
    for (size_t j = id_hash(id) & mask;; j = (j + 1) & mask) {
        if (m->keys[j] == id) {
            if (val) *val = m->vals[j];
            return 1;
        }
        if (m->keys[j] < 0) return 0;
    }
}

void osp__idmap_put(osp__idmap *m, int64_t id, uint64_t val) {
    size_t mask = m->cap - 1;
    size_t j = id_hash(id) & mask;
    while (m->keys[j] >= 0 && m->keys[j] != id) j = (j + 1) & mask;
    if (m->keys[j] < 0) m->count++;
    m->keys[j] = id;
    m->vals[j] = val;
}

int osp__idmap_del(osp__idmap *m, int64_t id) {
    if (!m->cap || id < 0) return 0;
    size_t mask = m->cap - 1;
    size_t j = id_hash(id) & mask;
    while (m->keys[j] != id) {
        if (m->keys[j] < 0) return 0;
        j = (j + 1) & mask;
    }
    /* Shift later members of the probe run back so lookups never stop early
     * at the hole. */
    size_t hole = j;
    for (size_t i = (j + 1) & mask; m->keys[i] >= 0; i = (i + 1) & mask) {
        size_t home = id_hash(m->keys[i]) & mask;
        /* i may move into hole if its home is not in (hole, i] cyclically */
        int between = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
        if (between) continue;
        m->keys[hole] = m->keys[i];
        m->vals[hole] = m->vals[i];
        hole = i;
    }
    m->keys[hole] = -1;
    m->count--;
    return 1;
}

size_t osp__idmap_sample(const osp__idmap *m, int64_t *ids, size_t n) {
    if (!m->count || !n) return 0;
    size_t got = 0;
    if (m->count <= n) {
        for (size_t i = 0; i < m->cap; i++)
            if (m->keys[i] >= 0) ids[got++] = m->keys[i];
        return got;
    }
    /* Evenly spaced probes over the table; the hash makes positions
     * independent of the ids, so this is a fair sample. */
    size_t step = m->cap / n;
    for (size_t s = 0; s < n; s++) {
        size_t j = s * step;
        size_t tries = 0;
        while (m->keys[j] < 0 && tries++ < step) j = (j + 1) & (m->cap - 1);
        if (m->keys[j] >= 0) ids[got++] = m->keys[j];
    }
    return got;
}

int osp__idmap_put_loaded(osp__idmap *m, int64_t id, uint64_t val, const char *name) {
    if (id < 0 || osp__idmap_get(m, id, NULL))
        return osp_error(OSP_ECORRUPT, "%s: bad or repeated id %lld", name, (long long)id);
    osp__idmap_put(m, id, val);
    return OSP_OK;
}

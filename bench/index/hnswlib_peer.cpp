// The native hnswlib peer for bench/index/run: Debian's libhnswlib-dev
// headers compiled with -O3 -march=native (the fair yardstick for a C engine;
// the Python wheel is an SSE-only build). `build` builds and saves an index;
// `search` loads it and, for each ef, searches one query at a time on one
// thread and the whole batch on THREADS threads (the best of REPS passes),
// printing one JSON object per line. Two modes so that the runner can
// alternate osprey's searches and these on the same, possibly busy, machine.
#include <hnswlib/hnswlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <unistd.h>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

static double now() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// A 2-D .npy of '<f4' or '<i8' (C order): enough for the files the bench writes.
template <typename T>
static std::vector<T> read_npy(const char *path, const char *descr, size_t &rows, size_t &cols) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw std::runtime_error(std::string("cannot open ") + path);
    char magic[8];
    f.read(magic, 8);
    if (memcmp(magic, "\x93NUMPY", 6)) throw std::runtime_error(std::string(path) + ": not .npy");
    size_t hlen = 0;
    if (magic[6] == 1) {
        unsigned char b[2];
        f.read((char *)b, 2);
        hlen = b[0] | b[1] << 8;
    } else {
        unsigned char b[4];
        f.read((char *)b, 4);
        hlen = b[0] | b[1] << 8 | b[2] << 16 | (size_t)b[3] << 24;
    }
    std::string h(hlen, ' ');
    f.read(&h[0], (std::streamsize)hlen);
    if (h.find(descr) == std::string::npos || h.find("'fortran_order': False") == std::string::npos)
        throw std::runtime_error(std::string(path) + ": expected " + descr);
    size_t p = h.find("'shape': (");
    if (p == std::string::npos) throw std::runtime_error(std::string(path) + ": no shape");
    rows = strtoull(h.c_str() + p + 10, nullptr, 10);
    size_t comma = h.find(',', p + 10);
    cols = strtoull(h.c_str() + comma + 1, nullptr, 10);
    if (!cols) cols = 1;
    std::vector<T> v(rows * cols);
    f.read((char *)v.data(), (std::streamsize)(v.size() * sizeof(T)));
    if (!f) throw std::runtime_error(std::string(path) + ": truncated");
    return v;
}

// hnswlib's own ParallelFor (python_bindings/bindings.cpp), simplified.
template <class F>
static void parallel_for(size_t n, size_t threads, F fn) {
    std::vector<std::thread> pool;
    std::atomic<size_t> next(0);
    for (size_t t = 0; t < threads; t++)
        pool.emplace_back([&] {
            for (size_t i; (i = next.fetch_add(1)) < n;) fn(i);
        });
    for (auto &th : pool) th.join();
}

static hnswlib::SpaceInterface<float> *make_space(const char *metric, size_t d) {
    if (!strcmp(metric, "ip")) return new hnswlib::InnerProductSpace(d);
    return new hnswlib::L2Space(d);
}

// build BASE.npy METRIC M EFC THREADS OUT.bin
static int build(char **argv) {
    size_t n, d;
    auto base = read_npy<float>(argv[0], "<f4", n, d);
    int M = atoi(argv[2]), efc = atoi(argv[3]), threads = atoi(argv[4]);
    auto *space = make_space(argv[1], d);
    auto *index = new hnswlib::HierarchicalNSW<float>(space, n, M, efc, 100);
    double t0 = now();
    // as the Python binding does: the first point alone, then in parallel
    index->addPoint(base.data(), 0);
    parallel_for(n - 1, threads, [&](size_t i) { index->addPoint(base.data() + (i + 1) * d, i + 1); });
    double build_s = now() - t0;
    index->saveIndex(argv[5]);
    std::ifstream sz(argv[5], std::ios::binary | std::ios::ate);
    printf("{\"peer\": \"hnswlib\", \"build_s\": %.3f, \"bytes_per_vector\": %.1f, \"threads\": %d}\n", build_s,
           (double)sz.tellg() / (double)n, threads);
    delete index;
    delete space;
    return 0;
}

// search INDEX.bin QUERIES.npy GT.npy METRIC THREADS EF[,EF...] SINGLE_N REPS
static int search(char **argv) {
    size_t nq, d, ng, kg;
    auto queries = read_npy<float>(argv[1], "<f4", nq, d);
    auto gt = read_npy<int64_t>(argv[2], "<i8", ng, kg);
    if (ng != nq) throw std::runtime_error("queries and ground truth disagree");
    int threads = atoi(argv[4]), reps = atoi(argv[7]);
    size_t single_n = std::min(nq, (size_t)atoll(argv[6]));
    const size_t k = 10;
    auto *space = make_space(argv[3], d);
    auto *index = new hnswlib::HierarchicalNSW<float>(space, argv[0]);
    std::vector<int64_t> found(nq * k);
    std::string efs = argv[5];
    for (size_t pos = 0; pos < efs.size();) {
        size_t e = efs.find(',', pos);
        if (e == std::string::npos) e = efs.size();
        int ef = atoi(efs.substr(pos, e - pos).c_str());
        pos = e + 1;
        index->setEf(ef);
        auto one = [&](size_t i) {
            auto r = index->searchKnn(queries.data() + i * d, k);
            for (size_t j = r.size(); j-- > 0;) {
                found[i * k + j] = (int64_t)r.top().second;
                r.pop();
            }
        };
        double best1 = 1e300, bestb = 1e300;
        for (int rep = 0; rep < reps; rep++) {
            double s = now();
            for (size_t i = 0; i < single_n; i++) one(i);
            best1 = std::min(best1, now() - s);
            s = now();
            parallel_for(nq, threads, one);
            bestb = std::min(bestb, now() - s);
        }
        size_t hit = 0;
        for (size_t i = 0; i < nq; i++)
            for (size_t j = 0; j < k; j++)
                for (size_t l = 0; l < k; l++)
                    if (found[i * k + l] == gt[i * kg + j]) {
                        hit++;
                        break;
                    }
        printf("{\"peer\": \"hnswlib\", \"ef\": %d, \"recall\": %.4f, \"qps_1\": %.1f, \"qps_batch\": %.1f}\n", ef,
               (double)hit / (double)(nq * k), single_n / best1, nq / bestb);
        fflush(stdout);
    }
    delete index;
    delete space;
    return 0;
}

int main(int argc, char **argv) {
    try {
        if (argc == 8 && !strcmp(argv[1], "build")) return build(argv + 2);
        if (argc == 10 && !strcmp(argv[1], "search")) return search(argv + 2);
    } catch (const std::exception &e) {
        fprintf(stderr, "hnswlib_peer: %s\n", e.what());
        return 1;
    }
    fprintf(stderr,
            "usage: hnswlib_peer build BASE.npy l2|ip M EFC THREADS OUT.bin\n"
            "       hnswlib_peer search OUT.bin QUERIES.npy GT.npy l2|ip THREADS EF[,EF...] SINGLE_N REPS\n");
    return 2;
}

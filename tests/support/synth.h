/* A small in-memory labelled dataset for tests: class k is a noisy bright
 * blob at a class-specific place, so small networks learn it quickly. */
#ifndef OSPREY_TEST_SYNTH_H
#define OSPREY_TEST_SYNTH_H

#include "osprey/data.h"

osp_dataset *synth_dataset(int count, int c, int h, int w, int classes, uint64_t seed);

#endif

/* Shared inside src/pipeline. */
#ifndef OSPREY_PIPELINE_IMPL_H
#define OSPREY_PIPELINE_IMPL_H

#include <stddef.h>

#include "osprey/pipeline.h"

/* SHA-256 of len bytes as 64 hex digits and a NUL. */
void osp__sha256_hex(const void *buf, size_t len, char out[65]);

#endif

/* osprey: the whole public API. */
#ifndef OSPREY_H
#define OSPREY_H

#define OSP_VERSION_STRING "0.1.0"

#include "osprey/core.h"
#include "osprey/data.h"
#include "osprey/graph.h"
#include "osprey/hash.h"
#include "osprey/index.h"
#include "osprey/io.h"
#include "osprey/kernels.h"
#include "osprey/model.h"
#include "osprey/onnx.h"
#include "osprey/nn.h"
#include "osprey/optim.h"
#include "osprey/pipeline.h"
#include "osprey/platform.h"
#include "osprey/serve.h"
#include "osprey/train.h"

#endif

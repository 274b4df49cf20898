/* osprey: the whole public API. */
#ifndef OSPREY_H
#define OSPREY_H

#define OSP_VERSION_STRING "0.1.0"

#include "osprey/core.h"

#endif

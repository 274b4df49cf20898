/* Calibration statistics of one layer's input (quantize.c), gathered by
 * the layer's forward while osp_net_calibrate_* runs. */
#ifndef OSPREY_NN_QUANTIZE_H
#define OSPREY_NN_QUANTIZE_H

#include <stdint.h>

struct osp_calib_stats;
void osp__calib_observe(struct osp_calib_stats *s, const float *x, int64_t n);
void osp__calib_stats_free(struct osp_calib_stats *s);

#endif

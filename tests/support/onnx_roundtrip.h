/* A network exported as ONNX and imported again must compute what it did. */
#ifndef OSPREY_TEST_ONNX_ROUNDTRIP_H
#define OSPREY_TEST_ONNX_ROUNDTRIP_H

/* Builds spec (random weights from seed, every trained one then moved by
 * up to 0.3), exports it to memory, imports
 * the model and runs both on the same random batch of 3 in inference.
 * Returns max |difference| / max |output|; a failed export or import is a
 * failed assertion. If layers is not NULL, the imported network's layer
 * types go there, comma-separated (at most len bytes). */
double onnx_roundtrip_error(const char *spec, unsigned seed, char *layers, int len);

#endif

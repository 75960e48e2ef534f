/*
 * model_image.h - the stopewatch int8 model on the board's MCU: the checks and the input quantization the
 * firmware does around TensorFlow Lite for Microcontrollers (TFLM).
 *
 * bench/bench_tflm.py --export DIR writes the model as a C array (stopewatch_model.c/.h: the flatbuffer,
 * its length, the input scale and zero point, the class names). Before handing the array to TFLM's
 * MicroInterpreter the firmware checks it is a whole TFLite flatbuffer (sw_model_check, with the CRC of
 * fb_encoder.c), then quantizes each preprocessed window into the interpreter's int8 input tensor
 * (sw_quantize_window), interleaved as the model reads it: sample by sample, channels inside.
 * No allocation, C99, no libc beyond <math.h>/<string.h>.
 */
#ifndef MODEL_IMAGE_H
#define MODEL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 0 if `model` is a TFLite flatbuffer ("TFL3" at byte 4) of `len` bytes whose zlib CRC-32 is `crc`;
 * -1 if the identifier is wrong or the image too short, -2 if the CRC differs (a corrupted flash). */
int sw_model_check(const unsigned char *model, size_t len, uint32_t crc);

/* q[s * channels + c] = saturate_int8(round_half_even(x[c * samples + s] / scale) + zero_point):
 * the window x laid out (channels, samples) as the gateway's preprocessing gives it. */
void sw_quantize_window(const float *x, size_t channels, size_t samples, float scale, int32_t zero_point,
                        int8_t *q);

#ifdef __cplusplus
}
#endif

#endif /* MODEL_IMAGE_H */

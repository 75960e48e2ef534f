/* model_image.c - see model_image.h. */
#include "model_image.h"

#include <math.h>
#include <string.h>

#include "fb_encoder.h"

int sw_model_check(const unsigned char *model, size_t len, uint32_t crc)
{
    if (len < 8u || memcmp(model + 4, "TFL3", 4) != 0)
        return -1;
    return fb_crc32(0u, model, len) == crc ? 0 : -2;
}

void sw_quantize_window(const float *x, size_t channels, size_t samples, float scale, int32_t zero_point,
                        int8_t *q)
{
    size_t c, s;
    for (s = 0; s < samples; s++) {
        for (c = 0; c < channels; c++) {
            /* rintf rounds half to even in the default mode, as numpy's round does on the gateway. */
            float v = rintf(x[c * samples + s] / scale) + (float)zero_point;
            q[s * channels + c] = (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : v);
        }
    }
}

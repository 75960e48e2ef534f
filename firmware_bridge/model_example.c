/*
 * model_example.c - minimal board-side use of the exported model, built beside fb_encoder.c:
 *
 *     python bench/bench_tflm.py --export build/mcu        # stopewatch_model.c/.h from models/triaxial
 *     cc -std=c99 -Ibuild/mcu -Ifirmware_bridge firmware_bridge/fb_encoder.c firmware_bridge/model_image.c \
 *        firmware_bridge/model_example.c build/mcu/stopewatch_model.c -lm -o model_example
 *     ./model_example < window.f32 > input.i8
 *
 * Checks the model image, then reads one preprocessed window (float32, channels x samples, the gateway's
 * layout) from stdin and writes the int8 input tensor TFLM's MicroInterpreter takes to stdout. On the board
 * the next step is the interpreter itself (C++, from the TFLM sources):
 *
 *     tflite::MicroInterpreter interp(tflite::GetModel(stopewatch_model), resolver, arena, ARENA_BYTES);
 *     interp.AllocateTensors();  memcpy(interp.input(0)->data.int8, q, sizeof q);  interp.Invoke();
 *
 * with ARENA_BYTES from bench/results/tflm.json and a resolver holding the ops listed there.
 */
#include <stdio.h>

#include "fb_encoder.h"
#include "model_image.h"
#include "stopewatch_model.h"

#define N (STOPEWATCH_MODEL_CHANNELS * STOPEWATCH_MODEL_SAMPLES)

static float window[N];
static int8_t q[N];

int main(void)
{
    int rc = sw_model_check(stopewatch_model, stopewatch_model_len, stopewatch_model_crc32);
    if (rc != 0) {
        fprintf(stderr, "model image refused (%d)\n", rc);
        return 2;
    }
    if (fread(window, sizeof window[0], N, stdin) != N) {
        fprintf(stderr, "need %d float32 values (%d channels x %d samples) on stdin\n", N,
                STOPEWATCH_MODEL_CHANNELS, STOPEWATCH_MODEL_SAMPLES);
        return 1;
    }
    sw_quantize_window(window, STOPEWATCH_MODEL_CHANNELS, STOPEWATCH_MODEL_SAMPLES, stopewatch_model_input_scale,
                       stopewatch_model_input_zero_point, q);
    fwrite(q, 1, sizeof q, stdout);
    fprintf(stderr, "model ok: %u bytes, %d classes, first '%s'\n", (unsigned)stopewatch_model_len,
            STOPEWATCH_MODEL_CLASSES, stopewatch_model_classes[0]);
    return 0;
}

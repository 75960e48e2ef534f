/* Test driver for fb_encoder.c: one request per stdin line, one hex-encoded frame per stdout line.
 *   S fmt board session seq rate_mhz channels n first has_ts ts v0 v1 ...   (n*channels values, instant-major)
 *   T board session seq rate_mhz channels sample has_ts ts temp_cdeg supply_mv overruns g0.. c0..
 *   L channels v0 v1 ...
 * An encoder refusal prints "ERR". Test code: stdio and stdlib are fine here, not in the encoder.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fb_encoder.h"

static uint8_t frame[FB_MAX_FRAME + 64];
static int32_t si[FB_MAX_PAYLOAD];
static float sf[FB_MAX_PAYLOAD];

static void hex(const uint8_t *p, size_t n)
{
    size_t i;
    if (n == 0) {
        puts("ERR");
        return;
    }
    for (i = 0; i < n; i++)
        printf("%02x", p[i]);
    putchar('\n');
}

int main(void)
{
    static char line[1 << 20];
    while (fgets(line, sizeof line, stdin)) {
        char *p = line + 1;
        fb_stream_t st;
        if (line[0] == 'S') {
            unsigned fmt = strtoul(p, &p, 10), board = strtoul(p, &p, 10), session = strtoul(p, &p, 10);
            unsigned long seq = strtoul(p, &p, 10), rate = strtoul(p, &p, 10);
            unsigned channels = strtoul(p, &p, 10), n = strtoul(p, &p, 10);
            unsigned long long first = strtoull(p, &p, 10);
            int has_ts = (int)strtol(p, &p, 10);
            int64_t ts = strtoll(p, &p, 10);
            size_t i, count = (size_t)channels * n;
            if (count > FB_MAX_PAYLOAD) count = FB_MAX_PAYLOAD;
            for (i = 0; i < count; i++) {
                if (fmt == FB_FLOAT32) sf[i] = strtof(p, &p);
                else si[i] = (int32_t)strtoll(p, &p, 10);
            }
            fb_stream_init(&st, (uint16_t)board, (uint16_t)session, (uint32_t)rate, (uint8_t)channels, (uint8_t)fmt);
            st.seq = (uint32_t)seq;
            if (fmt == FB_FLOAT32)
                hex(frame, fb_encode_samples_f32(&st, frame, sizeof frame, sf, (uint16_t)n, first, has_ts ? &ts : NULL));
            else
                hex(frame, fb_encode_samples(&st, frame, sizeof frame, si, (uint16_t)n, first, has_ts ? &ts : NULL));
        } else if (line[0] == 'T') {
            float gain[FB_MAX_CHANNELS];
            uint32_t clipped[FB_MAX_CHANNELS];
            fb_status_t s;
            unsigned board = strtoul(p, &p, 10), session = strtoul(p, &p, 10);
            unsigned long seq = strtoul(p, &p, 10), rate = strtoul(p, &p, 10);
            unsigned channels = strtoul(p, &p, 10), c;
            unsigned long long sample = strtoull(p, &p, 10);
            int has_ts = (int)strtol(p, &p, 10);
            int64_t ts = strtoll(p, &p, 10);
            s.temperature_cdeg = (int16_t)strtol(p, &p, 10);
            s.supply_mv = (uint16_t)strtoul(p, &p, 10);
            s.buffer_overruns = (uint32_t)strtoul(p, &p, 10);
            for (c = 0; c < channels && c < FB_MAX_CHANNELS; c++) gain[c] = strtof(p, &p);
            for (c = 0; c < channels && c < FB_MAX_CHANNELS; c++) clipped[c] = (uint32_t)strtoul(p, &p, 10);
            s.gain = gain;
            s.clipped = clipped;
            fb_stream_init(&st, (uint16_t)board, (uint16_t)session, (uint32_t)rate, (uint8_t)channels, 0);
            st.seq = (uint32_t)seq;
            hex(frame, fb_encode_status(&st, frame, sizeof frame, &s, sample, has_ts ? &ts : NULL));
        } else if (line[0] == 'L') {
            unsigned channels = strtoul(p, &p, 10), c;
            for (c = 0; c < channels && c < FB_MAX_CHANNELS; c++) si[c] = (int32_t)strtoll(p, &p, 10);
            hex(frame, fb_text_line((char *)frame, sizeof frame, si, (uint8_t)channels));
        }
        fflush(stdout);
    }
    return 0;
}

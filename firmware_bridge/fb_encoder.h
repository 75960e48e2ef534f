/*
 * fb_encoder.h - frame encoder of the stopewatch ADC board serial protocol, version 1.
 *
 * Drop fb_encoder.h and fb_encoder.c into the firmware project. No allocation, no libc
 * beyond <string.h> and <stdint.h>/<stddef.h>. Output is little-endian whatever the MCU's
 * byte order; floats are assumed IEEE-754 binary32. See PROTOCOL.md for the format.
 *
 * Typical use, from the ADC's DMA-complete interrupt or the main loop:
 *
 *     static fb_stream_t st;
 *     static uint8_t frame[FB_MAX_FRAME];
 *     fb_stream_init(&st, BOARD_ID, boot_counter, 10000u * 1000u, 3, FB_INT24);
 *     ...
 *     size_t len = fb_encode_samples(&st, frame, sizeof frame, dma_samples, n, first_index, NULL);
 *     if (len) uart_send(frame, len);
 *
 * To use the MCU's CRC unit, compile with -DFB_CRC32=my_crc32 where
 * uint32_t my_crc32(const uint8_t *data, size_t len) returns zlib's crc32(0, data, len)
 * (reflected polynomial 0x04C11DB7, initial and final XOR 0xFFFFFFFF).
 */
#ifndef FB_ENCODER_H
#define FB_ENCODER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FB_SYNC0 0xA5u
#define FB_SYNC1 0x5Au
#define FB_VERSION 1u
#define FB_HEADER_SIZE 40u
#define FB_CRC_SIZE 4u
#define FB_MAX_PAYLOAD 16384u
#define FB_MAX_FRAME (FB_HEADER_SIZE + FB_MAX_PAYLOAD + FB_CRC_SIZE)
#define FB_MAX_CHANNELS 32u
#define FB_FLAG_TIME_VALID 0x01u

enum fb_frame_type { FB_FRAME_SAMPLES = 1, FB_FRAME_STATUS = 2 };
enum fb_format { FB_INT16 = 1, FB_INT24 = 2, FB_INT32 = 3, FB_FLOAT32 = 4 };

/* One board's stream. seq is incremented after every frame (sample or status). */
typedef struct {
    uint16_t board_id;
    uint16_t session;        /* change at every boot (boot counter or random): resets the host's tracking */
    uint32_t seq;
    uint32_t sample_rate_mhz; /* sampling rate in millihertz: 10 kHz = 10000000 */
    uint8_t channels;        /* 1..FB_MAX_CHANNELS */
    uint8_t format;          /* enum fb_format */
} fb_stream_t;

/* Board health, sent in a status frame. gain and clipped hold one value per channel. */
typedef struct {
    int16_t temperature_cdeg; /* 0.01 degC */
    uint16_t supply_mv;
    uint32_t buffer_overruns; /* cumulative */
    const float *gain;        /* PGA gain per channel */
    const uint32_t *clipped;  /* cumulative clipped samples per channel */
} fb_status_t;

void fb_stream_init(fb_stream_t *s, uint16_t board_id, uint16_t session, uint32_t sample_rate_mhz,
                    uint8_t channels, uint8_t format);

/* Bytes per sample of a format, 0 if unknown. */
size_t fb_bytes_per_sample(uint8_t format);

/* Frame length for n_samples instants of the stream's format, 0 if over the bound. */
size_t fb_samples_frame_size(const fb_stream_t *s, uint16_t n_samples);

/*
 * Encode a sample frame. samples: n_samples instants, channel-fastest (ch0 ch1 ch2 ch0 ch1 ...), as
 * int32 counts (int16/int24 formats keep the low bits; the caller keeps values in range). For
 * FB_FLOAT32 use fb_encode_samples_f32. first_sample: absolute index of the first instant since boot.
 * timestamp_ns: UTC of the first instant in ns since 1970 (GPS/PPS), or NULL.
 * Returns the frame length, or 0 if the arguments are invalid or cap is too small.
 */
size_t fb_encode_samples(fb_stream_t *s, uint8_t *out, size_t cap, const int32_t *samples,
                         uint16_t n_samples, uint64_t first_sample, const int64_t *timestamp_ns);
size_t fb_encode_samples_f32(fb_stream_t *s, uint8_t *out, size_t cap, const float *samples,
                             uint16_t n_samples, uint64_t first_sample, const int64_t *timestamp_ns);

/* Encode a status frame taken at absolute sample index `sample`. Returns its length or 0. */
size_t fb_encode_status(fb_stream_t *s, uint8_t *out, size_t cap, const fb_status_t *status,
                        uint64_t sample, const int64_t *timestamp_ns);

/* Text mode: one line "v0,v1,...\n" of decimal counts. Returns its length (no NUL) or 0. */
size_t fb_text_line(char *out, size_t cap, const int32_t *samples, uint8_t channels);

/* zlib-compatible CRC-32: fb_crc32(0, data, len) == zlib.crc32(data). Chainable. */
uint32_t fb_crc32(uint32_t crc, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* FB_ENCODER_H */

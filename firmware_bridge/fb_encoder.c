/* fb_encoder.c - see fb_encoder.h and PROTOCOL.md. */
#include "fb_encoder.h"

#include <string.h>

#ifndef FB_CRC32
#define FB_CRC32(data, len) fb_crc32(0u, (data), (len))
#endif

/* Nibble table: 64 bytes of flash instead of 1 KiB, about 2x slower than a byte table. */
static const uint32_t fb_crc_table[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
    0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t fb_crc32(uint32_t crc, const uint8_t *data, size_t len)
{
    crc = ~crc;
    while (len--) {
        crc ^= *data++;
        crc = (crc >> 4) ^ fb_crc_table[crc & 15u];
        crc = (crc >> 4) ^ fb_crc_table[crc & 15u];
    }
    return ~crc;
}

static uint8_t *put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put24(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    return p + 3;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
    return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    p = put32(p, (uint32_t)v);
    return put32(p, (uint32_t)(v >> 32));
}

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

void fb_stream_init(fb_stream_t *s, uint16_t board_id, uint16_t session, uint32_t sample_rate_mhz,
                    uint8_t channels, uint8_t format)
{
    memset(s, 0, sizeof *s);
    s->board_id = board_id;
    s->session = session;
    s->sample_rate_mhz = sample_rate_mhz;
    s->channels = channels;
    s->format = format;
}

size_t fb_bytes_per_sample(uint8_t format)
{
    switch (format) {
    case FB_INT16: return 2u;
    case FB_INT24: return 3u;
    case FB_INT32: return 4u;
    case FB_FLOAT32: return 4u;
    default: return 0u;
    }
}

size_t fb_samples_frame_size(const fb_stream_t *s, uint16_t n_samples)
{
    size_t payload = (size_t)s->channels * n_samples * fb_bytes_per_sample(s->format);
    if (s->channels < 1u || s->channels > FB_MAX_CHANNELS || n_samples == 0u || payload == 0u ||
        payload > FB_MAX_PAYLOAD)
        return 0u;
    return FB_HEADER_SIZE + payload + FB_CRC_SIZE;
}

static uint8_t *put_header(const fb_stream_t *s, uint8_t *p, uint8_t type, uint8_t format, uint16_t n_samples,
                           uint64_t first_sample, const int64_t *timestamp_ns, size_t payload_len)
{
    *p++ = FB_SYNC0;
    *p++ = FB_SYNC1;
    *p++ = FB_VERSION;
    *p++ = type;
    *p++ = timestamp_ns ? FB_FLAG_TIME_VALID : 0u;
    *p++ = s->channels;
    *p++ = format;
    *p++ = 0u; /* reserved */
    p = put16(p, s->board_id);
    p = put16(p, n_samples);
    p = put32(p, s->seq);
    p = put32(p, s->sample_rate_mhz);
    p = put64(p, first_sample);
    p = put64(p, timestamp_ns ? (uint64_t)*timestamp_ns : 0u);
    p = put16(p, (uint32_t)payload_len);
    return put16(p, s->session);
}

static size_t finish(fb_stream_t *s, uint8_t *out, uint8_t *end)
{
    size_t len = (size_t)(end - out);
    put32(end, FB_CRC32(out, len));
    s->seq++;
    return len + FB_CRC_SIZE;
}

static size_t encode(fb_stream_t *s, uint8_t *out, size_t cap, const int32_t *si, const float *sf,
                     uint16_t n_samples, uint64_t first_sample, const int64_t *timestamp_ns)
{
    size_t frame = fb_samples_frame_size(s, n_samples);
    size_t i, count = (size_t)n_samples * s->channels;
    uint8_t *p;
    if (frame == 0u || frame > cap || (s->format == FB_FLOAT32) != (sf != NULL))
        return 0u;
    p = put_header(s, out, FB_FRAME_SAMPLES, s->format, n_samples, first_sample, timestamp_ns,
                   frame - FB_HEADER_SIZE - FB_CRC_SIZE);
    switch (s->format) {
    case FB_INT16: for (i = 0; i < count; i++) p = put16(p, (uint32_t)si[i]); break;
    case FB_INT24: for (i = 0; i < count; i++) p = put24(p, (uint32_t)si[i]); break;
    case FB_INT32: for (i = 0; i < count; i++) p = put32(p, (uint32_t)si[i]); break;
    default: for (i = 0; i < count; i++) p = put32(p, float_bits(sf[i])); break;
    }
    return finish(s, out, p);
}

size_t fb_encode_samples(fb_stream_t *s, uint8_t *out, size_t cap, const int32_t *samples,
                         uint16_t n_samples, uint64_t first_sample, const int64_t *timestamp_ns)
{
    return encode(s, out, cap, samples, NULL, n_samples, first_sample, timestamp_ns);
}

size_t fb_encode_samples_f32(fb_stream_t *s, uint8_t *out, size_t cap, const float *samples,
                             uint16_t n_samples, uint64_t first_sample, const int64_t *timestamp_ns)
{
    return encode(s, out, cap, NULL, samples, n_samples, first_sample, timestamp_ns);
}

size_t fb_encode_status(fb_stream_t *s, uint8_t *out, size_t cap, const fb_status_t *status,
                        uint64_t sample, const int64_t *timestamp_ns)
{
    size_t payload = 8u + 8u * (size_t)s->channels;
    uint8_t *p;
    uint8_t c;
    if (s->channels < 1u || s->channels > FB_MAX_CHANNELS || FB_HEADER_SIZE + payload + FB_CRC_SIZE > cap)
        return 0u;
    p = put_header(s, out, FB_FRAME_STATUS, 0u, 0u, sample, timestamp_ns, payload);
    p = put16(p, (uint16_t)status->temperature_cdeg);
    p = put16(p, status->supply_mv);
    p = put32(p, status->buffer_overruns);
    for (c = 0; c < s->channels; c++) {
        p = put32(p, float_bits(status->gain[c]));
        p = put32(p, status->clipped[c]);
    }
    return finish(s, out, p);
}

size_t fb_text_line(char *out, size_t cap, const int32_t *samples, uint8_t channels)
{
    size_t n = 0;
    uint8_t c;
    for (c = 0; c < channels; c++) {
        char digits[11];
        int k = 0;
        int32_t v = samples[c];
        /* Work in negative numbers so that INT32_MIN needs no special case. */
        int32_t neg = v < 0 ? v : -v;
        do {
            digits[k++] = (char)('0' - neg % 10);
            neg /= 10;
        } while (neg != 0);
        if (n + (size_t)k + 2u + (v < 0) > cap)
            return 0u;
        if (v < 0)
            out[n++] = '-';
        while (k)
            out[n++] = digits[--k];
        out[n++] = (c + 1u < channels) ? ',' : '\n';
    }
    return n;
}

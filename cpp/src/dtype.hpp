// Conversions between fp32 and the 16-bit storage formats of safetensors checkpoints.
// bf16 is the top half of fp32 (round to nearest even); fp16 conversion is the usual bit
// manipulation, written here because C++17 has no half type and F16C intrinsics would tie the
// portable library to one instruction set.
#pragma once
#include <cstdint>
#include <cmath>
#include <cstring>

namespace lima {

inline uint32_t f32_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bits_f32(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return uint16_t(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        while (!(man & 0x400u)) { man <<= 1; --exp; }  // subnormal: normalise
        ++exp; man &= 0x3ffu;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t f32_to_f16(float f) {
    const uint32_t u = f32_bits(f), sign = (u >> 16) & 0x8000u;
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf
    if (a < 0x38800000u) {                                   // subnormal or zero
        // in units of the smallest fp16 subnormal (2^-24), rounded to nearest even
        return uint16_t(sign | uint32_t(std::nearbyint(bits_f32(a) * 16777216.0f)));
    }
    uint32_t r = a - 0x38000000u;                             // rebias exponent 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);                           // round to nearest even
    return uint16_t(sign | (r >> 13));
}

}  // namespace lima

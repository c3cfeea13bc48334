// The ops' x86 builds target SSE2 only. Their hottest loops are compiled again for wider
// vector units (function target attributes) and picked at run time when both the CPU and
// torch's own dispatch level allow it: ATEN_CPU_CAPABILITY=default (or avx2) caps these copies
// as it caps ATen's kernels.
#pragma once
#include <ATen/Version.h>

#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PAA_X86_SIMD 1
#define PAA_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define PAA_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")))
#endif

enum class SimdLevel { kBase, kAvx2, kAvx512 };

inline SimdLevel simd_level() {
#ifdef PAA_X86_SIMD
  static const SimdLevel level = [] {
    const std::string capability = at::get_cpu_capability();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq");
    if (capability == "AVX512" && avx512) return SimdLevel::kAvx512;
    if (capability != "DEFAULT" && avx2) return SimdLevel::kAvx2;
    return SimdLevel::kBase;
  }();
  return level;
#else
  return SimdLevel::kBase;
#endif
}

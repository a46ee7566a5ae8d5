/* clock_ratio.c — how fast the core runs against the TSC, for reading tick figures.
 *
 *   cc -O2 benches/tools/clock_ratio.c -o /tmp/clock_ratio && taskset -c 1 /tmp/clock_ratio
 *
 * Times a chain of dependent scalar adds (one cycle each) and, where the CPU has AVX-512, a
 * chain of dependent 512-bit vpaddq (one cycle each) in TSC ticks, and prints ticks per cycle
 * and the implied core clock for a given TSC rate (2300 MHz unless given as the argument).
 * x86-64 with GCC or Clang only. Not part of the build or the tests. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <x86intrin.h>

#define CHAIN 200000000ull

/* register-register adds: a chain of `add $imm` can be folded away by the renamer of recent
 * cores, a chain through a register operand cannot */
static double scalar_ticks(void) {
  uint64_t x = 1, y = 3;
  uint64_t t0 = __rdtsc();
  for (uint64_t i = 0; i < CHAIN; i++)
    __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(y));
  uint64_t t1 = __rdtsc();
  return (double)(t1 - t0) / (4.0 * (double)CHAIN);
}

__attribute__((target("avx512f"))) static double vector_ticks(void) {
  __m512i x = _mm512_set1_epi64(1), y = _mm512_set1_epi64(3);
  uint64_t t0 = __rdtsc();
  for (uint64_t i = 0; i < CHAIN; i++)
    __asm__ volatile("vpaddq %1, %0, %0\n\tvpaddq %1, %0, %0\n\tvpaddq %1, %0, %0\n\t"
                     "vpaddq %1, %0, %0"
                     : "+v"(x)
                     : "v"(y));
  uint64_t t1 = __rdtsc();
  return (double)(t1 - t0) / (4.0 * (double)CHAIN);
}

int main(int argc, char **argv) {
  double tsc_mhz = argc > 1 ? atof(argv[1]) : 2300.0;
  double s = scalar_ticks();
  s = scalar_ticks(); /* the second run, after the clock has settled */
  printf("scalar add chain: %.3f ticks per cycle (core about %.0f MHz at a %.0f MHz TSC)\n", s,
         tsc_mhz / s, tsc_mhz);
  if (__builtin_cpu_supports("avx512f")) {
    double v = vector_ticks();
    v = vector_ticks();
    printf("512-bit vpaddq chain: %.3f ticks per cycle (core about %.0f MHz)\n", v, tsc_mhz / v);
  } else {
    printf("512-bit vpaddq chain: no AVX-512 on this CPU\n");
  }
  return 0;
}

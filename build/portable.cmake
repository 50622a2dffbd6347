# Passed to every native engine's CMake build (CMAKE_TOOLCHAIN_FILE) by
# scripts/build-release, so shipped binaries do not assume the build
# machine's CPU: ggml is built for the x86-64-v3 baseline (SSE4.2, AVX,
# AVX2, BMI2, FMA, F16C) instead of -march=native.
set(GGML_NATIVE OFF CACHE BOOL "portable release build" FORCE)

// PAA_HOST_DEVICE marks inline math that the CPU and CUDA kernels share.
#pragma once

#ifdef __CUDACC__
#define PAA_HOST_DEVICE __host__ __device__
#else
#define PAA_HOST_DEVICE
#endif

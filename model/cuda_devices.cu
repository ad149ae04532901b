/* cuda_devices.cu — what the CUDA runtime sees: the first piece of the CUDA backend
 * (the backend itself arrives with the CUDA issue). Built where nvcc is found. */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" int ks_cuda_device_count(char *msg, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (msg && cap) snprintf(msg, cap, "CUDA runtime: %s", cudaGetErrorString(e));
        return 0;
    }
    if (msg && cap) {
        cudaDeviceProp p;
        if (n > 0 && cudaGetDeviceProperties(&p, 0) == cudaSuccess)
            snprintf(msg, cap, "%d device(s); device 0: %s, %.1f GiB, compute %d.%d", n, p.name,
                     p.totalGlobalMem / 1073741824.0, p.major, p.minor);
        else
            snprintf(msg, cap, "%d device(s)", n);
    }
    return n;
}

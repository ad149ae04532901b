/* cuda_none.c — the answer of a build without CUDA (nvcc was not found or -Dcuda=disabled). */
#include <stdio.h>

#include "ks_model.h"

int ks_cuda_device_count(char *msg, size_t cap) {
    if (msg && cap) snprintf(msg, cap, "built without CUDA (reconfigure with -Dcuda=enabled where nvcc is installed)");
    return -1;
}

#include "backend.h"

ks_status ks_backend_cuda_create(size_t max_in, ks_backend **out, ks_error *err) {
    (void)max_in;
    *out = NULL;
    return ks_error_set(err, KS_ERR_BACKEND, "backend 'cuda': this koalascope was built without "
                        "CUDA (nvcc was not found at build time, or -Dcuda=disabled); use "
                        "--backend cpu, or rebuild where the CUDA toolkit is installed");
}

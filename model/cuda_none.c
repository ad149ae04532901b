/* cuda_none.c — the answer of a build without CUDA (nvcc was not found or -Dcuda=disabled). */
#include <stdio.h>

#include "ks_model.h"

int ks_cuda_device_count(char *msg, size_t cap) {
    if (msg && cap) snprintf(msg, cap, "built without CUDA (reconfigure with -Dcuda=enabled where nvcc is installed)");
    return -1;
}

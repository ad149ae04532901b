/* results_private.h — the small writers every results directory of experiments/ shares (the
 * audit's results.c defines them; diff_results.c uses them too): paths, CSV fields, files
 * written under a temporary name and renamed, whole HDF5 datasets. Not installed. */
#ifndef KS_RESULTS_PRIVATE_H
#define KS_RESULTS_PRIVATE_H

#include <stdio.h>

#include <hdf5.h>

#include "ks_status.h"

/* "dir/name", malloc'd (NULL when out of memory). */
char *ks_res_join(const char *dir, const char *name);
/* A CSV field, quoted when it needs to be. */
void ks_res_csv_str(FILE *f, const char *s);
/* %.17g (round-trips a double); NaN as an empty field (pandas and csv readers agree on that). */
void ks_res_csv_num(FILE *f, double v);
/* Write path via path.tmp (fsync'd) and rename; fn writes the content. */
typedef ks_status (*ks_res_write_fn)(FILE *f, const void *arg, ks_error *err);
ks_status ks_res_write_atomic(const char *path, ks_res_write_fn fn, const void *arg, ks_error *err);
/* Whole datasets of g: fixed-length UTF-8 strings (NULL-padded, as wide as the longest), f64
 * and i32 arrays. Errors name path and obj/name. */
ks_status ks_res_ds_str(const char *path, const char *obj, hid_t g, const char *name,
                        const char *const *v, size_t n, ks_error *err);
ks_status ks_res_ds_f64(const char *path, const char *obj, hid_t g, const char *name, int rank,
                        const hsize_t *dims, const double *v, ks_error *err);
ks_status ks_res_ds_i32(const char *path, const char *obj, hid_t g, const char *name, int rank,
                        const hsize_t *dims, const int *v, ks_error *err);

#endif

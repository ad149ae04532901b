/* hf.c — placeholder until written. */

/* sample.c — placeholder until written. */

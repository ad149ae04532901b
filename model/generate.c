/* generate.c — placeholder until written. */

/* dtype.c — placeholder until written. */

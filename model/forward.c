/* forward.c — placeholder until written. */

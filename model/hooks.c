/* hooks.c — placeholder until written. */

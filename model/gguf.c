/* gguf.c — placeholder until written. */

/* tokenizer.c — placeholder until written. */

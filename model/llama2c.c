/* llama2c.c — placeholder until written. */

/* safetensors.c — placeholder until written. */

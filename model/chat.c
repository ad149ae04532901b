/* chat.c — placeholder until written. */

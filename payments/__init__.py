"""The payments service: wallets, payments and the simulated card gateway (`gateway`, its memory in Redis).
Wallets move only by conditional `UPDATE`; `tasks` are its saga commands (charge, refund)."""

"""Training machinery: the optimizer loop every train stage runs, the policy's PPO update, the ranks of a distributed train stage."""

"""The law library: pure fits on tables (Chinchilla Methods 1-3, power laws, hyperparameter
laws, schedule laws) with their bootstrap intervals. Nothing here knows about a study."""

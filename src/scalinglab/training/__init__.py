"""The trainer: batches, schedules, checkpoints, data parallelism, divergence, provenance, the
resources a training job asks for, and the training benchmark."""

"""Training the student on a run's data: mlx_lm config, preflight checks of the data folder, the runner."""

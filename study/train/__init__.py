"""Training: the one loop and its phase timer, the one epoch driver (fit) with its stop policies, the
TrainContext toggles set, tasks and metrics, checkpoints and what a checkpoint carries to be used alone."""

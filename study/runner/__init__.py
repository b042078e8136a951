"""The parent's side of a study: the ladder (planning, retries), the preflight, the sanity judge, the run
folder and its lock, checkpoints kept and cleaned, multi-node, live scalars."""

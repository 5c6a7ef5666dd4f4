"""The run: store, checkpoints, the loop, runners, the evaluation a worker runs, and what follows the
search."""

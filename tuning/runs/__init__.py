"""A run folder and the queue of runs: what a run holds, who owns it, what it cost, where it ran."""

"""Closing the loop: the prediction log, feedback, drift statistics and the monitor."""

"""Processors between sensors and models (kept apart from the models, as in LeRobot)."""

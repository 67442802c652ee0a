"""The training loop's parts: time budget and schedule, validation, losses, handlers."""

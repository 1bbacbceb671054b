"""The work the relay does: submitting tasks, ingesting callbacks, and the background workers
(poller, copier, deliverer) on their shared queue-worker loop."""

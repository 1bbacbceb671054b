"""The domain: records, the task state machine, GrsAI's task objects, schedules, the model
catalog, credentials and the error tree. Standard library only; every other layer builds on it.
"""

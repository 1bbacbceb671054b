"""The `grsai-relay` command (`service.cli.main:main`): serve, keys, tasks, assets, purge, db."""

"""The parts of `scripts/bench`: plans, load generators, servers, seeding, scenarios, report."""

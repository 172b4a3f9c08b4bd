"""Dataset fingerprint: what the planner needs to know about a dataset, extracted once."""

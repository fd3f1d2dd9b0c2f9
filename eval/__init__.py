"""A/B/n harness: arms x questions -> metrics, latency, report."""

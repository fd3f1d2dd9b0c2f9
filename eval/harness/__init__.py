"""The A/B/n harness: arms x questions -> scored records, statistics and reports."""

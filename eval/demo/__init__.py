"""`ragtune demo`: the whole story on the bundled sample domain, built on the harness."""

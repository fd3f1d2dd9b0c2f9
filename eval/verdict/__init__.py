"""`ragtune verdict`: fine-tune, retrieve, or both, measured on the user's data and recommended."""

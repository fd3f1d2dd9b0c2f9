"""The pipeline that joins retrieval and the tuned generator, and the HTTP app around it."""

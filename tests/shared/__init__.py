"""Behaviour both clouds share: the same cases against the AWS handlers and the GCP functions."""

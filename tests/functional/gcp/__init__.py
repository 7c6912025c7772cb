"""The GCP half on the emulators: each Cloud Function and each GCP adapter of the gemcast package."""

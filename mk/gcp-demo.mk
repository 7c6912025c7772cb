# The GCP half on this machine: Firestore and Cloud Storage emulators, the six Cloud Functions
# under functions-framework, the serving process as the Vertex AI endpoint. It uploads
# data/diamonds.csv, runs ingest_upload and trigger_training (the CustomJob trains locally),
# starts serving and prints a curl line with a locally issued ID token. Ctrl-C stops it all.
# GCP_DEMO_ARGS passes options, e.g. `make demo-gcp GCP_DEMO_ARGS="--kind linear --budget 10"`.
GCP_DEMO_ARGS ?=

.PHONY: demo-gcp test-gcp

demo-gcp: $(STAMP)
	$(BIN)/gemcast-local up --cloud gcp $(GCP_DEMO_ARGS)

# The GCP function tests and the behaviour tests both clouds share.
test-gcp: $(STAMP)
	$(BIN)/python -m pytest tests/functional/gcp tests/shared tests/unit/test_gcp_configs.py

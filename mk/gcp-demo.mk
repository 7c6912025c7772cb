# The GCP half on this machine: the Firestore, Cloud Storage and Firebase Auth emulators, the
# Cloud Functions under functions-framework (one `api` entry for every route), the serving
# process as the Vertex AI endpoint and the web page. It uploads data/diamonds.csv, runs
# ingest_upload and trigger_training (the CustomJob trains locally), signs the demo user up and
# prints the page's URL and curl lines. Ctrl-C stops it all. (mk/firebase.mk installs the emulator.)
# check_drift and retrain_on_drift run beside them, with a Cloud Monitoring stand-in; while the
# stack runs, `make drift-gcp` (mk/drift.mk) checks its prediction log and retrains on alarm.
# GCP_DEMO_ARGS passes options, e.g. `make demo-gcp GCP_DEMO_ARGS="--kind linear --budget 10"`.
GCP_DEMO_ARGS ?=

.PHONY: demo-gcp test-gcp

demo-gcp: $(STAMP)
	$(BIN)/gemcast-local up --cloud gcp $(GCP_DEMO_ARGS)

# The GCP function tests and the behaviour tests both clouds share.
test-gcp: $(STAMP)
	$(BIN)/python -m pytest tests/functional/gcp tests/shared tests/unit/test_gcp_configs.py

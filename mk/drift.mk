# `make drift`: the drift check on the running local stack's prediction log (`make demo`,
# state in .gemcast/), then what CloudWatch does with it: on ALARM the training trigger runs
# even when the data did not change, and the job's gate decides (gemcast-local drift).
# `make drift-gcp`: the same on the running GCP half (`make demo-gcp`): check_drift, the alert
# policy of gcp/monitoring/drift on its metric, and retrain_on_drift on an opened incident.
#   make drift                                        # the last 24 hours
#   make drift EVENT=events/drift_check_past_window.json
#   make drift-gcp
DRIFT_STATE ?= .gemcast
EVENT ?=

.PHONY: drift drift-gcp

drift: $(STAMP)
	$(BIN)/gemcast-local drift --state $(DRIFT_STATE) $(if $(EVENT),--event $(EVENT))

drift-gcp: $(STAMP)
	$(BIN)/gemcast-local drift --cloud gcp --state $(DRIFT_STATE) $(if $(EVENT),--event $(EVENT))

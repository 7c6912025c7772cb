# `make drift`: the drift check on the running local stack's prediction log (`make demo`,
# state in .gemcast/), then what CloudWatch does with it: on ALARM the training trigger runs
# even when the data did not change, and the job's gate decides (gemcast-local drift).
#   make drift                                        # the last 24 hours
#   make drift EVENT=events/drift_check_past_window.json
DRIFT_STATE ?= .gemcast
EVENT ?=

.PHONY: drift

drift: $(STAMP)
	$(BIN)/gemcast-local drift --state $(DRIFT_STATE) $(if $(EVENT),--event $(EVENT))

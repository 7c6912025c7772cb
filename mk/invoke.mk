# Run one Lambda function locally with an events/ file, without Docker:
#   make invoke-preprocess                    # its default case (events/preprocess_raw_batch.json)
#   make invoke-preprocess CASE=key_with_spaces
#   make invoke-list                          # every function and its cases
# Against the running local stack (`make demo`, state in .gemcast/) when there is one, else
# against a moto server started for the call. The response goes to stdout, logs to stderr.
# `make trigger` runs the daily training check on the running local stack (gemcast-local trigger).
INVOKE_FUNCTIONS := $(sort $(notdir $(patsubst %/app.py,%,$(wildcard functions/*/app.py))))
CASE  ?=
STATE ?= .gemcast

.PHONY: invoke-list trigger $(addprefix invoke-,$(INVOKE_FUNCTIONS))

$(addprefix invoke-,$(INVOKE_FUNCTIONS)): invoke-%: $(STAMP)
	$(BIN)/python -m gemcast_local.invoke $* --state $(STATE) $(if $(CASE),--case $(CASE))

invoke-list:
	@for f in $(INVOKE_FUNCTIONS); do \
	  printf 'make invoke-%-24s CASE=' "$$f"; \
	  ls events | sed -n "s/^$${f}_\(.*\)\.json$$/\1/p" | paste -sd '|' -; \
	done

trigger: $(STAMP)
	$(BIN)/gemcast-local trigger --state $(STATE)

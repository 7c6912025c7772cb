# GCP deployment: `make gcp-deploy STAGE=dev` runs gcp/deploy.sh for that stage.
# Without gcloud credentials (or with DRY_RUN=1) it prints every command it would run and
# exits 0, saying so on its first and last lines. `make gcp-plan` always does that.
# GCP_STEPS picks steps, e.g. `make gcp-deploy STAGE=dev GCP_STEPS="functions scheduler"`.
STAGE     ?= dev
GCP_STEPS ?=
DRY_RUN   ?= 0

.PHONY: gcp-deploy gcp-plan

gcp-deploy:
	DRY_RUN=$(DRY_RUN) bash gcp/deploy.sh $(STAGE) $(GCP_STEPS)

gcp-plan:
	DRY_RUN=1 bash gcp/deploy.sh $(STAGE) $(GCP_STEPS)

# shellcheck shell=bash
# One service account per gemcast function (and per workload that runs code), each with the
# narrowest roles it needs, bound on the resource where one exists (the bucket, the function)
# and on the project only where GCP has no narrower scope (Firestore, Vertex AI).
# Sourced by gcp/deploy.sh, which defines run, PROJECT, BUCKET, DRY_RUN and sa_email.
#
#  account                 runs                     roles (scope)
#  gemcast-ingest-upload   ingest_upload            storage.objectUser (bucket: reads raw/, writes curated/
#                                                   and rejected/), datastore.user (project: inventory)
#  gemcast-trigger-train   trigger_training         storage.objectViewer (bucket: has the data changed?),
#                                                   datastore.user (project: snapshots),
#                                                   gemcastTrainingLauncher (project: customJobs create/get/list),
#                                                   iam.serviceAccountUser (on gemcast-training only)
#  gemcast-api             api (every API route)    gemcastPredictor (project: endpoints.predict),
#                                                   datastore.user (project: prediction log, inventory),
#                                                   storage.objectViewer (bucket: models/ for the
#                                                   model routes), storage.objectUser (bucket, logs/
#                                                   only: log records too large for Firestore, or
#                                                   written while it fails)
#  gemcast-before-create   before_create            none: checks the e-mail domain from its env
#  gemcast-before-sign-in  before_sign_in           none
#  gemcast-drift-check     check_drift              storage.objectUser (bucket: models/ in, monitoring/ out),
#                                                   datastore.viewer (project: prediction log),
#                                                   monitoring.metricWriter (project: drift metrics)
#  gemcast-retrain-drift   retrain_on_drift         as gemcast-trigger-train (the same trigger, on an alert)
#  gemcast-roll-champion   roll_champion            storage.objectViewer (bucket: models/),
#                                                   gemcastEndpointDeployer (project), monitoring.viewer
#                                                   (project: the canary's metrics),
#                                                   iam.serviceAccountUser (on gemcast-serving only)
#  gemcast-scheduler       Cloud Scheduler job      run.invoker (on trigger_training only)
#  gemcast-eventarc        Eventarc trigger         eventarc.eventReceiver (project),
#                                                   run.invoker (on ingest_upload, retrain_on_drift
#                                                   and roll_champion only; deploy.sh binds the
#                                                   last two after deploying them)
#  gemcast-training        Vertex AI CustomJob      storage.objectUser (bucket: curated/ in, models/ out)
#  gemcast-serving         Vertex AI endpoint       storage.objectViewer (bucket: models/)
#  gemcast-webapp          App Engine web app       none: it calls the API with the user's token
#
# Names are 6-30 characters ([a-z][a-z0-9-]*[a-z0-9]), as IAM requires.

# "entry point|service account" of each function. Plain arrays, not `declare -A`, so that the
# bash 3.2 of macOS runs this too.
FUNCTION_SAS=(
  "ingest_upload|gemcast-ingest-upload"
  "trigger_training|gemcast-trigger-train"
  "api|gemcast-api"
  "before_create|gemcast-before-create"
  "before_sign_in|gemcast-before-sign-in"
  "check_drift|gemcast-drift-check"
  "retrain_on_drift|gemcast-retrain-drift"
  "roll_champion|gemcast-roll-champion"
)
WORKLOAD_SAS=(gemcast-scheduler gemcast-eventarc gemcast-training gemcast-serving gemcast-webapp)

# "account|role" pairs granted on the data bucket.
BUCKET_BINDINGS=(
  "gemcast-ingest-upload|roles/storage.objectUser"
  "gemcast-trigger-train|roles/storage.objectViewer"
  "gemcast-training|roles/storage.objectUser"
  "gemcast-serving|roles/storage.objectViewer"
  "gemcast-api|roles/storage.objectViewer"
  "gemcast-drift-check|roles/storage.objectUser"
  "gemcast-retrain-drift|roles/storage.objectViewer"
  "gemcast-roll-champion|roles/storage.objectViewer"
)
# "account|role|object prefix" granted on the data bucket under an IAM condition: the role holds
# for objects under that prefix only (gemcast.log_overflow writes logs/<date>/<request id>.json).
BUCKET_PREFIX_BINDINGS=(
  "gemcast-api|roles/storage.objectUser|logs/"
)
# "account|role" pairs granted on the project (no narrower scope exists for these services).
PROJECT_BINDINGS=(
  "gemcast-ingest-upload|roles/datastore.user"
  "gemcast-trigger-train|roles/datastore.user"
  "gemcast-trigger-train|projects/${PROJECT}/roles/gemcastTrainingLauncher"
  "gemcast-api|projects/${PROJECT}/roles/gemcastPredictor"
  "gemcast-api|roles/datastore.user"
  "gemcast-eventarc|roles/eventarc.eventReceiver"
  "gemcast-drift-check|roles/datastore.viewer"
  "gemcast-drift-check|roles/monitoring.metricWriter"
  "gemcast-retrain-drift|roles/datastore.user"
  "gemcast-retrain-drift|projects/${PROJECT}/roles/gemcastTrainingLauncher"
  "gemcast-roll-champion|projects/${PROJECT}/roles/gemcastEndpointDeployer"
  "gemcast-roll-champion|roles/monitoring.viewer"
)
# "custom role id|definition file"
CUSTOM_ROLES=(
  "gemcastPredictor|gcp/iam/roles/gemcast_predictor.yaml"
  "gemcastTrainingLauncher|gcp/iam/roles/gemcast_training_launcher.yaml"
  "gemcastEndpointDeployer|gcp/iam/roles/gemcast_endpoint_deployer.yaml"
)

# The service account of a function entry point.
function_sa() {
  local pair
  for pair in "${FUNCTION_SAS[@]}"; do
    if [ "${pair%%|*}" = "$1" ]; then echo "${pair#*|}"; return 0; fi
  done
  echo "no service account for entry point $1" >&2
  return 1
}

ensure_service_account() {
  local account="$1"
  if ! exists gcloud iam service-accounts describe "$(sa_email "$account")" --project="$PROJECT"; then
    run gcloud iam service-accounts create "$account" --project="$PROJECT" \
      --display-name="gemcast ${account#gemcast-}" \
      --description="Runs only gemcast ${account#gemcast-}; roles in gcp/iam/service_accounts.sh"
  fi
}

deploy_iam() {
  local role file account pair
  for pair in "${CUSTOM_ROLES[@]}"; do
    role="${pair%%|*}" file="${pair#*|}"
    if exists gcloud iam roles describe "$role" --project="$PROJECT"; then
      run gcloud iam roles update "$role" --project="$PROJECT" --file="$file" --quiet
    else
      run gcloud iam roles create "$role" --project="$PROJECT" --file="$file"
    fi
  done

  for pair in "${FUNCTION_SAS[@]}"; do
    account="${pair#*|}"
    ensure_service_account "$account"
  done
  for account in "${WORKLOAD_SAS[@]}"; do
    ensure_service_account "$account"
  done

  for pair in "${BUCKET_BINDINGS[@]}"; do
    run gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
      --member="serviceAccount:$(sa_email "${pair%%|*}")" --role="${pair#*|}"
  done
  local prefix rest
  for pair in "${BUCKET_PREFIX_BINDINGS[@]}"; do
    account="${pair%%|*}" rest="${pair#*|}"
    role="${rest%%|*}" prefix="${rest#*|}"
    run gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
      --member="serviceAccount:$(sa_email "$account")" --role="$role" \
      --condition="expression=resource.name.startsWith(\"projects/_/buckets/${BUCKET}/objects/${prefix}\"),title=${account#gemcast-}-${prefix%/}-only"
  done
  for pair in "${PROJECT_BINDINGS[@]}"; do
    run gcloud projects add-iam-policy-binding "$PROJECT" \
      --member="serviceAccount:$(sa_email "${pair%%|*}")" --role="${pair#*|}" --condition=None
  done

  # trigger_training starts the CustomJob *as* gemcast-training: it may act as that one account.
  run gcloud iam service-accounts add-iam-policy-binding "$(sa_email gemcast-training)" \
    --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-trigger-train)" \
    --role=roles/iam.serviceAccountUser
  run gcloud iam service-accounts add-iam-policy-binding "$(sa_email gemcast-training)" \
    --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-retrain-drift)" \
    --role=roles/iam.serviceAccountUser
  run gcloud iam service-accounts add-iam-policy-binding "$(sa_email gemcast-serving)" \
    --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-roll-champion)" \
    --role=roles/iam.serviceAccountUser

  # Cloud Storage publishes object events through Pub/Sub as its own service agent.
  run gcloud projects add-iam-policy-binding "$PROJECT" \
    --member="serviceAccount:$(gcs_service_agent)" --role=roles/pubsub.publisher --condition=None
}

# Invoker bindings need the functions to exist: deploy.sh calls this after deploying them.
deploy_invokers() {
  run gcloud functions add-invoker-policy-binding "$(function_name trigger_training)" \
    --region="$REGION" --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-scheduler)"
  run gcloud functions add-invoker-policy-binding "$(function_name ingest_upload)" \
    --region="$REGION" --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-eventarc)"
}

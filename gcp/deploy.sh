#!/usr/bin/env bash
# Deploy the GCP half of gemcast to one stage: gcp/deploy.sh <stage> [step ...]
#
#   stage   dev | prod: reads gcp/env/<stage>.yaml (the functions' environment, and the
#           project, region, bucket, endpoint id and images this script needs)
#   steps   any of: apis storage iam network firestore model functions scheduler identity
#           webapp monitoring drift perimeter (default: all, in that order)
#
# Dry run: with DRY_RUN=1, or when gcloud is missing or has no credentials
# (`gcloud auth print-access-token` fails), every command is printed, prefixed with "+ ",
# instead of run, and the script exits 0 with a line saying nothing was deployed.
#
# Settings that are about the deployment rather than the functions (environment, optional):
#   GCP_PROJECT_ID          override GOOGLE_CLOUD_PROJECT of the env file
#   MODEL_TAG               suffix of the web app's App Engine version (default: UTC time stamp)
#   PYTHON                  a Python with gcp/requirements.txt, for the model step (default python3)
#   SERVING_MACHINE_TYPE    endpoint machine (default n1-standard-2), MIN/MAX_REPLICAS (1/2)
#   TRAINING_SCHEDULE       cron of the training trigger (default "0 3 * * *", Etc/UTC)
#   VPC_NETWORK, VPC_CONNECTOR_RANGE   connector network (default) and /28 range (10.8.0.0/28)
#   APP_ENGINE_REGION       (default: derived from GCP_REGION, e.g. europe-west1 -> europe-west)
#   ACCESS_POLICY           access-context-manager policy id; the perimeter step needs it
#   ACCESS_LEVELS           comma-separated access levels let into the perimeter (operators)
#   NOTIFICATION_CHANNELS   comma-separated channel ids for the alert policies
#   IDENTITY_API_KEY        Identity Platform's web API key, for the web page's sign-in (webapp step)
#   DRIFT_SCHEDULE          cron of the drift check (default "0 4 * * *", Etc/UTC)
#   CANARY_SCHEDULE         cron of the Vertex AI canary's watch (default "*/5 * * * *"); a new
#                           champion starts its canary at once (the bucket's champion event)
#   GCP_BUILD_DIR           where function sources are staged (default build/gcp)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

STAGE="${1:-${STAGE:-dev}}"
shift || true
ALL_STEPS=(apis storage iam network firestore model functions scheduler identity webapp monitoring drift perimeter)
if [ "$#" -gt 0 ]; then STEPS=("$@"); else STEPS=("${ALL_STEPS[@]}"); fi

ENV_FILE="gcp/env/${STAGE}.yaml"
if [ ! -f "$ENV_FILE" ]; then
  stages=""
  for f in gcp/env/*.yaml; do stages="${stages} $(basename "$f" .yaml)"; done
  echo "deploy.sh: no $ENV_FILE; stages:${stages}" >&2
  exit 2
fi
for step in "${STEPS[@]}"; do
  case " ${ALL_STEPS[*]} " in
    *" $step "*) ;;
    *) echo "deploy.sh: unknown step '$step'; steps: ${ALL_STEPS[*]}" >&2; exit 2 ;;
  esac
done

# The env file is flat `KEY: "value"` YAML (what --env-vars-file takes): awk reads it.
env_value() {
  awk -v key="$1" '
    $0 ~ "^" key ":" {
      sub("^" key ":[ \t]*", ""); sub(/[ \t]+#.*$/, "")
      gsub(/^"|"$/, ""); gsub(/^'"'"'|'"'"'$/, ""); print; exit
    }' "$ENV_FILE"
}
require_value() {
  local value
  value="$(env_value "$1")"
  if [ -z "$value" ]; then echo "deploy.sh: $1 is empty in $ENV_FILE" >&2; exit 2; fi
  echo "$value"
}

PROJECT="${GCP_PROJECT_ID:-$(require_value GOOGLE_CLOUD_PROJECT)}"
REGION="$(require_value GCP_REGION)"
BUCKET="$(require_value DATA_BUCKET)"
ENDPOINT_ID="$(require_value VERTEX_ENDPOINT_ID)"
SERVING_IMAGE="$(require_value SERVING_IMAGE_URI)"
REGISTRY_URI="$(require_value REGISTRY_URI)"
MODEL_TAG="${MODEL_TAG:-$(date -u +%Y%m%d%H%M%S)}"
SERVING_MACHINE_TYPE="${SERVING_MACHINE_TYPE:-n1-standard-2}"
MIN_REPLICAS="${MIN_REPLICAS:-1}"
MAX_REPLICAS="${MAX_REPLICAS:-2}"
TRAINING_SCHEDULE="${TRAINING_SCHEDULE:-0 3 * * *}"
VPC_NETWORK="${VPC_NETWORK:-default}"
VPC_CONNECTOR="gemcast-${STAGE}"
VPC_CONNECTOR_RANGE="${VPC_CONNECTOR_RANGE:-10.8.0.0/28}"
APP_ENGINE_REGION="${APP_ENGINE_REGION:-$(echo "$REGION" | sed -E 's/^(europe-west|us-central|us-east|asia-northeast)1$/\1/')}"
BUILD_DIR="${GCP_BUILD_DIR:-build/gcp}/${STAGE}"   # staged function sources (git-ignored)

# -- dry run or real run ---------------------------------------------------------------------
DRY_REASON=""
if [ "${DRY_RUN:-0}" = "1" ]; then
  DRY_REASON="DRY_RUN=1"
elif ! command -v gcloud >/dev/null 2>&1; then
  DRY_REASON="gcloud is not installed"
elif ! gcloud auth print-access-token >/dev/null 2>&1; then
  DRY_REASON="gcloud has no credentials (gcloud auth print-access-token failed; run gcloud auth login)"
fi
DRY=0
COMMANDS=0
TEMP_FILES=()
cleanup() { if [ "${#TEMP_FILES[@]}" -gt 0 ]; then rm -f "${TEMP_FILES[@]}"; fi; }
trap cleanup EXIT
if [ -n "$DRY_REASON" ]; then
  DRY=1
  echo "DRY RUN ($DRY_REASON): printing the commands for stage '$STAGE', project '$PROJECT'; nothing is deployed."
fi

# Run a command, or print it (shell-quoted, so it can be pasted) in a dry run.
run() {
  COMMANDS=$((COMMANDS + 1))
  if [ "$DRY" = 1 ]; then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    printf '+ %s\n' "$*" >&2
    "$@"
  fi
}
# True when a describe-style command succeeds; always false in a dry run (print the create).
exists() {
  [ "$DRY" = 1 ] && return 1
  "$@" >/dev/null 2>&1
}
# The output of a read-only command, or a placeholder in a dry run.
query() {
  local placeholder="$1"
  shift
  if [ "$DRY" = 1 ]; then echo "$placeholder"; else "$@"; fi
}

sa_email() { echo "$1@${PROJECT}.iam.gserviceaccount.com"; }
# Function names carry the stage; gen2 functions become Cloud Run services, which allow no "_".
function_name() { echo "gemcast-${STAGE}-${1//_/-}"; }
function_url() {
  query "https://${REGION}-${PROJECT}.cloudfunctions.net/$(function_name "$1")" \
    gcloud functions describe "$(function_name "$1")" --region="$REGION" --project="$PROJECT" \
    --format='value(serviceConfig.uri)'
}
project_number() {
  query "PROJECT_NUMBER" gcloud projects describe "$PROJECT" --format='value(projectNumber)'
}
gcs_service_agent() {
  query "service-PROJECT_NUMBER@gs-project-accounts.iam.gserviceaccount.com" \
    gcloud storage service-agent --project="$PROJECT"
}

# shellcheck source=gcp/iam/service_accounts.sh
source gcp/iam/service_accounts.sh

# -- steps -----------------------------------------------------------------------------------
step_apis() {
  run gcloud services enable --project="$PROJECT" \
    cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
    artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com \
    cloudscheduler.googleapis.com aiplatform.googleapis.com firestore.googleapis.com \
    storage.googleapis.com vpcaccess.googleapis.com identitytoolkit.googleapis.com \
    appengine.googleapis.com accesscontextmanager.googleapis.com monitoring.googleapis.com \
    iam.googleapis.com
}

step_storage() {
  if ! exists gcloud storage buckets describe "gs://${BUCKET}" --project="$PROJECT"; then
    run gcloud storage buckets create "gs://${BUCKET}" --project="$PROJECT" --location="$REGION" \
      --uniform-bucket-level-access --public-access-prevention
  fi
}

step_iam() { deploy_iam; }

step_network() {
  # Functions reach the perimeter's services through this connector (egress all).
  if ! exists gcloud compute networks vpc-access connectors describe "$VPC_CONNECTOR" \
      --region="$REGION" --project="$PROJECT"; then
    run gcloud compute networks vpc-access connectors create "$VPC_CONNECTOR" \
      --region="$REGION" --project="$PROJECT" --network="$VPC_NETWORK" \
      --range="$VPC_CONNECTOR_RANGE" --min-instances=2 --max-instances=3
  fi
}

step_firestore() {
  if ! exists gcloud firestore databases describe --database='(default)' --project="$PROJECT"; then
    run gcloud firestore databases create --database='(default)' --location="$REGION" \
      --type=firestore-native --project="$PROJECT"
  fi
  # One `composite create` per index of gcp/firestore.indexes.json (the single source).
  local line
  while IFS= read -r line; do
    # shellcheck disable=SC2086  # the line is a list of --flags without spaces inside
    run gcloud firestore indexes composite create --project="$PROJECT" --database='(default)' $line
  done < <(python3 - gcp/firestore.indexes.json <<'PY'
import json, sys
for index in json.load(open(sys.argv[1]))["indexes"]:
    flags = [f"--collection-group={index['collectionGroup']}",
             f"--query-scope={index.get('queryScope', 'COLLECTION').lower().replace('_', '-')}"]
    for field in index["fields"]:
        flags.append(f"--field-config=field-path={field['fieldPath']},order={field['order'].lower()}")
    print(" ".join(flags))
PY
)
}

# The endpoint, and the champion on it through the same canary as every later champion
# (gemcast.vertex_deploy.roll_champion, one step with start=True, run here with the deployer's
# credentials; PYTHON needs gcp/requirements.txt). Its Model serves exactly the champion's
# version (MODEL_VERSION), so an unchanged champion changes nothing.
#  - The first deploy (an empty endpoint: no old model to split the traffic with, nothing to
#    fall back to) gives the champion 100 % of the traffic at once.
#  - A later one (another model on the endpoint) deploys the new champion beside it with 10 %;
#    the canary schedule of the drift step then promotes it after 300 s, or undeploys it on
#    errors or p99 latency (the SageMaker rollback's alarms).
#  - No champion yet (a new project): only the endpoint; the first promotion's champion event
#    (the bucket's notification of models/champion.json, drift step) deploys it.
step_model() {
  if ! exists gcloud ai endpoints describe "$ENDPOINT_ID" --region="$REGION" --project="$PROJECT"; then
    run gcloud ai endpoints create --project="$PROJECT" --region="$REGION" \
      --endpoint-id="$ENDPOINT_ID" --display-name="gemcast-${STAGE}"
  fi
  run env PYTHONPATH=layers/gemcast "${PYTHON:-python3}" -m gemcast.vertex_deploy \
    --project="$PROJECT" --region="$REGION" --endpoint-id="$ENDPOINT_ID" \
    --image="$SERVING_IMAGE" --registry="$REGISTRY_URI" --stage="$STAGE" \
    --service-account="$(sa_email gemcast-serving)" --machine-type="$SERVING_MACHINE_TYPE" \
    --min-replicas="$MIN_REPLICAS" --max-replicas="$MAX_REPLICAS"
}

# Stage one function's source: its main.py (gcp/functions/<entry>/ if that folder exists, else
# gcp/functions/), the gemcast package beside it, and requirements.txt.
stage_source() {
  local entry="$1" src dest="${BUILD_DIR}/$1"
  if [ -f "gcp/functions/${entry}/main.py" ]; then src="gcp/functions/${entry}"; else src="gcp/functions"; fi
  if [ ! -f "${src}/main.py" ]; then
    if [ "$DRY" = 1 ]; then
      echo "# note: ${src}/main.py does not exist yet; a real deploy would stop here" >&2
      echo "$dest"
      return 0
    fi
    echo "deploy.sh: ${src}/main.py not found (entry point ${entry})" >&2
    exit 1
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  find "$src" -maxdepth 1 -type f \( -name '*.py' -o -name '*.txt' -o -name '*.json' \) \
    -exec cp {} "$dest/" \;
  cp -R layers/gemcast/gemcast "$dest/gemcast"
  find "$dest" -name '__pycache__' -type d -prune -exec rm -rf {} +
  if [ ! -f "$dest/requirements.txt" ]; then cp gcp/requirements.txt "$dest/requirements.txt"; fi
  echo "$dest"
}

# deploy_function <entry point> <memory> <timeout> <ingress> <trigger flags...>
deploy_function() {
  local entry="$1" memory="$2" timeout="$3" ingress="$4"
  shift 4
  local source
  source="$(stage_source "$entry")"
  run gcloud functions deploy "$(function_name "$entry")" --gen2 --project="$PROJECT" \
    --region="$REGION" --runtime=python312 --source="$source" --entry-point="$entry" \
    --service-account="$(sa_email "$(function_sa "$entry")")" \
    --env-vars-file="$ENV_FILE" \
    --vpc-connector="projects/${PROJECT}/locations/${REGION}/connectors/${VPC_CONNECTOR}" \
    --egress-settings=all --ingress-settings="$ingress" \
    --memory="$memory" --timeout="$timeout" --max-instances=10 \
    "$@"
}

step_functions() {
  # Eventarc delivers the bucket's object-finalized events; the bucket's region is the
  # trigger's location. Internal-only: nothing outside the project calls it.
  deploy_function ingest_upload 1Gi 540s internal-only \
    --trigger-event-filters=type=google.cloud.storage.object.v1.finalized \
    --trigger-event-filters="bucket=${BUCKET}" \
    --trigger-location="$REGION" \
    --trigger-service-account="$(sa_email gemcast-eventarc)"
  # Only Cloud Scheduler's account may call it (deploy_invokers); Scheduler counts as internal.
  deploy_function trigger_training 512Mi 120s internal-only \
    --trigger-http --no-allow-unauthenticated
  # API clients hold Identity Platform ID tokens, which Cloud Run IAM does not accept: these
  # two are public at the IAM level and verify the bearer token in code (IDENTITY_AUDIENCE).
  # The one HTTPS entry of the API: it routes by path through gemcast.routes, as API Gateway
  # routes to the Lambdas; public at the IAM level, it verifies the Identity Platform ID token
  # of every route that needs a caller (Cloud Run IAM does not accept those tokens).
  deploy_function api 512Mi 30s all --trigger-http --allow-unauthenticated
  # Identity Platform calls blocking functions without IAM credentials and signs the body
  # with its own JWT, which the function verifies; it must answer within 7 s.
  deploy_function before_create 256Mi 10s all --trigger-http --allow-unauthenticated
  deploy_function before_sign_in 256Mi 10s all --trigger-http --allow-unauthenticated
  deploy_invokers
}

step_scheduler() {
  scheduled_post "gemcast-${STAGE}-training" "$TRAINING_SCHEDULE" trigger_training 120s
}

step_identity() {
  # Registers the two blocking functions with Identity Platform (no gcloud command exists;
  # this is the admin API that firebase-tools calls too).
  local create_uri sign_in_uri body
  create_uri="$(function_url before_create)"
  sign_in_uri="$(function_url before_sign_in)"
  body="{\"blockingFunctions\":{\"triggers\":{\"beforeCreate\":{\"functionUri\":\"${create_uri}\"},\"beforeSignIn\":{\"functionUri\":\"${sign_in_uri}\"}}}}"
  # The token goes through a private header file so that the echoed command does not show it.
  local auth_header
  if [ "$DRY" = 1 ]; then
    # shellcheck disable=SC2016  # printed for the reader to run, not expanded here
    auth_header='Authorization: Bearer $(gcloud auth print-access-token)'
  else
    auth_header="@$(mktemp)"
    chmod 600 "${auth_header#@}"
    printf 'Authorization: Bearer %s\n' "$(gcloud auth print-access-token)" > "${auth_header#@}"
    TEMP_FILES+=("${auth_header#@}")
  fi
  run curl --fail --silent --show-error -X PATCH \
    -H "$auth_header" -H "Content-Type: application/json" \
    -H "X-Goog-User-Project: ${PROJECT}" \
    "https://identitytoolkit.googleapis.com/admin/v2/projects/${PROJECT}/config?updateMask=blockingFunctions" \
    -d "$body"
}

step_webapp() {
  if ! exists gcloud app describe --project="$PROJECT"; then
    run gcloud app create --project="$PROJECT" --region="$APP_ENGINE_REGION" \
      --service-account="$(sa_email gemcast-webapp)"
  fi
  # The page calls the one API entry (every route of gemcast.routes) with the user's ID token.
  local key="${IDENTITY_API_KEY:-}"
  if [ -z "$key" ]; then
    if [ "$DRY" = 0 ]; then
      echo "deploy.sh: set IDENTITY_API_KEY (the project's web API key) for the web page's sign-in" >&2
      return 1
    fi
    # shellcheck disable=SC2016  # printed for the reader to fill in
    key='${IDENTITY_API_KEY}'
  fi
  run make webapp-appengine-env API_URL="$(function_url api)" IDENTITY_API_KEY="$key" WEBAPP_STAGE="$STAGE"
  run gcloud app deploy .gemcast/webapp-bundle/app.yaml --project="$PROJECT" --quiet \
    --service-account="$(sa_email gemcast-webapp)" --version="${STAGE}-${MODEL_TAG}"
}

step_monitoring() {
  local policy
  local channels=()
  if [ -n "${NOTIFICATION_CHANNELS:-}" ]; then
    channels=(--notification-channels="$NOTIFICATION_CHANNELS")
  fi
  for policy in gcp/monitoring/*.json; do
    run gcloud alpha monitoring policies create --project="$PROJECT" \
      --policy-from-file="$policy" ${channels[@]+"${channels[@]}"}
  done
}

# Drift (gemcast.drift) and the Vertex AI canary (gemcast.vertex_deploy): check_drift daily, its
# alert policy notifying a Pub/Sub topic whose function retrain_on_drift runs the training
# trigger; the canary's topic fed by the bucket's notification of the registry's champion.json
# (a new champion starts the canary at once, as S3's event does on AWS) and by a Cloud Scheduler
# job every few minutes that only watches a canary under way (promote or roll back).
step_drift() {
  local topic="gemcast-${STAGE}-drift-alerts" canary_topic="gemcast-${STAGE}-canary" channel
  local policy=gcp/monitoring/drift/drift_score.json
  local registry="${REGISTRY_URI#gs://}" name
  local registry_bucket="${registry%%/*}" champion_key="${registry#*/}/champion.json"
  if [ "$registry" = "$registry_bucket" ]; then champion_key=champion.json; fi
  for name in "$topic" "$canary_topic"; do
    if ! exists gcloud pubsub topics describe "$name" --project="$PROJECT"; then
      run gcloud pubsub topics create "$name" --project="$PROJECT"
    fi
  done
  # Cloud Monitoring publishes notifications as its own service agent, Cloud Storage as its own.
  run gcloud pubsub topics add-iam-policy-binding "$topic" --project="$PROJECT" \
    --member="serviceAccount:service-$(project_number)@gcp-sa-monitoring-notification.iam.gserviceaccount.com" \
    --role=roles/pubsub.publisher
  run gcloud pubsub topics add-iam-policy-binding "$canary_topic" --project="$PROJECT" \
    --member="serviceAccount:$(gcs_service_agent)" --role=roles/pubsub.publisher
  # The champion event: only objects under the prefix are published; roll_champion checks the name.
  if [ "$DRY" = 1 ] || ! gcloud storage buckets notifications list "gs://${registry_bucket}" \
      --format='value(topic)' 2>/dev/null | grep -q "/topics/${canary_topic}\$"; then
    run gcloud storage buckets notifications create "gs://${registry_bucket}" --project="$PROJECT" \
      --topic="projects/${PROJECT}/topics/${canary_topic}" --event-types=OBJECT_FINALIZE \
      --object-prefix="$champion_key" --payload-format=json --skip-topic-setup
  fi
  deploy_function check_drift 1Gi 540s internal-only --trigger-http --no-allow-unauthenticated
  deploy_function retrain_on_drift 512Mi 120s internal-only --trigger-topic="$topic" \
    --trigger-service-account="$(sa_email gemcast-eventarc)"
  # --retry: a failed step (say Vertex AI answered 503) is delivered again; a step is idempotent.
  deploy_function roll_champion 512Mi 300s internal-only --trigger-topic="$canary_topic" \
    --trigger-service-account="$(sa_email gemcast-eventarc)" --retry
  run gcloud functions add-invoker-policy-binding "$(function_name check_drift)" \
    --region="$REGION" --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-scheduler)"
  local entry
  for entry in retrain_on_drift roll_champion; do
    run gcloud functions add-invoker-policy-binding "$(function_name "$entry")" \
      --region="$REGION" --project="$PROJECT" --member="serviceAccount:$(sa_email gemcast-eventarc)"
  done
  scheduled_post "gemcast-${STAGE}-drift-check" "${DRIFT_SCHEDULE:-0 4 * * *}" check_drift 540s
  # The canary's watch: a message on the canary topic (Cloud Scheduler publishes it as its own
  # service agent); with no canary under way a step reads the endpoint and changes nothing.
  local verb=create
  if exists gcloud scheduler jobs describe "gemcast-${STAGE}-canary" --location="$REGION" --project="$PROJECT"; then
    verb=update
  fi
  run gcloud scheduler jobs "$verb" pubsub "gemcast-${STAGE}-canary" --project="$PROJECT" --location="$REGION" \
    --schedule="${CANARY_SCHEDULE:-*/5 * * * *}" --time-zone=Etc/UTC --topic="$canary_topic" \
    --message-body='{"source":"schedule"}'

  channel="$(query "projects/${PROJECT}/notificationChannels/DRIFT_CHANNEL_ID" \
    gcloud beta monitoring channels list --project="$PROJECT" \
    --filter="displayName=\"gemcast ${STAGE} drift alerts\"" --format='value(name)')"
  if [ "$DRY" = 1 ] || [ -z "$channel" ]; then
    run gcloud beta monitoring channels create --project="$PROJECT" --type=pubsub \
      --display-name="gemcast ${STAGE} drift alerts" --channel-labels="topic=projects/${PROJECT}/topics/${topic}"
    channel="$(query "$channel" gcloud beta monitoring channels list --project="$PROJECT" \
      --filter="displayName=\"gemcast ${STAGE} drift alerts\"" --format='value(name)')"
  fi
  run gcloud alpha monitoring policies create --project="$PROJECT" --policy-from-file="$policy" \
    --notification-channels="$channel"
  run gcloud monitoring dashboards create --project="$PROJECT" \
    --config-from-file=gcp/monitoring/drift/dashboard.json
}

# scheduled_post <job> <cron> <entry point> <attempt deadline>: a Cloud Scheduler POST with OIDC.
scheduled_post() {
  local job="$1" cron="$2" uri verb=create headers=--headers
  uri="$(function_url "$3")"
  # `update http` spells the headers flag differently from `create http`.
  if exists gcloud scheduler jobs describe "$job" --location="$REGION" --project="$PROJECT"; then
    verb=update headers=--update-headers
  fi
  run gcloud scheduler jobs "$verb" http "$job" --project="$PROJECT" --location="$REGION" \
    --schedule="$cron" --time-zone=Etc/UTC --uri="$uri" --http-method=POST \
    "${headers}=Content-Type=application/json" --message-body='{"source":"schedule"}' \
    --oidc-service-account-email="$(sa_email gemcast-scheduler)" --oidc-token-audience="$uri" \
    --attempt-deadline="$4"
}

step_perimeter() {
  if [ -z "${ACCESS_POLICY:-}" ] && [ "$DRY" = 0 ]; then
    echo "deploy.sh: skipping the perimeter: set ACCESS_POLICY (gcloud access-context-manager policies list --organization=ORG)" >&2
    return 0
  fi
  local services number levels=()
  # restrictedServices of gcp/vpc-sc/perimeter.yaml, comma-separated.
  services="$(awk '
    /^[ \t]*restrictedServices:/ { on = 1; next }
    on && /^[ \t]*- / { sub(/^[ \t]*- /, ""); sub(/[ \t]+#.*$/, ""); printf "%s%s", sep, $0; sep = "," ; next }
    on { exit }' gcp/vpc-sc/perimeter.yaml)"
  number="$(project_number)"
  if [ -n "${ACCESS_LEVELS:-}" ]; then levels=(--access-levels="$ACCESS_LEVELS"); fi
  local policy="${ACCESS_POLICY:-}"
  if [ -z "$policy" ]; then
    # gcloud insists on a number here; this one stands for the organization's policy id.
    echo "# ACCESS_POLICY is not set: 123456789012 below stands for the access policy number"
    policy=123456789012
  fi
  run gcloud access-context-manager perimeters create "gemcast_${STAGE}" \
    --policy="$policy" --title="gemcast ${STAGE}" \
    --perimeter-type=regular --resources="projects/${number}" \
    --restricted-services="$services" \
    --enable-vpc-accessible-services --vpc-allowed-services=RESTRICTED-SERVICES \
    ${levels[@]+"${levels[@]}"}
}

for step in "${STEPS[@]}"; do
  echo "# step: ${step}"
  "step_${step}"
done

if [ "$DRY" = 1 ]; then
  echo "DRY RUN complete: ${COMMANDS} commands printed for stage '${STAGE}'; nothing was deployed ($DRY_REASON)."
else
  echo "Deployed stage '${STAGE}' to project '${PROJECT}' (${COMMANDS} commands)."
fi

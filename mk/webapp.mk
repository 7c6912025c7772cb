# The web app (webapp/): bundle for Elastic Beanstalk and App Engine, run against an API, test.
# The bundle is webapp/ plus the few pure-Python modules of gemcast the page imports: the schema
# (grade names and meanings) and the route table (each API call's method and path), with what
# they import; everything else it gets from the API over HTTP.
WEBAPP_BUNDLE     := .gemcast/webapp-bundle
WEBAPP_ZIP        := .gemcast/webapp-bundle.zip
WEBAPP_PORT       ?= 8050
WEBAPP_STAGE      ?= dev
WEBAPP_GEMCAST    := __init__ schema errors predict api routes

.PHONY: webapp-bundle webapp-appengine-env webapp-run webapp-test webapp-browser

webapp-bundle:
	rm -rf $(WEBAPP_BUNDLE) $(WEBAPP_ZIP)
	mkdir -p $(WEBAPP_BUNDLE)/gemcast
	cp -R webapp/. $(WEBAPP_BUNDLE)/
	find $(WEBAPP_BUNDLE) -name __pycache__ -prune -exec rm -rf {} +
	cp $(foreach m,$(WEBAPP_GEMCAST),layers/gemcast/gemcast/$(m).py) $(WEBAPP_BUNDLE)/gemcast/
	cd $(WEBAPP_BUNDLE) && $(CURDIR)/$(BIN)/python -I -B -c "import sys; sys.path.insert(0, '.'); import gemcast.routes, gemcast.schema"
	cd $(WEBAPP_BUNDLE) && $(CURDIR)/$(BIN)/python -c "import shutil; shutil.make_archive('../webapp-bundle', 'zip', '.')"
	@echo "Elastic Beanstalk source bundle: $(WEBAPP_ZIP) (upload it, then set WebAppSourceBucket/WebAppSourceKey)"
	@echo "App Engine: make webapp-appengine-env, then gcloud app deploy $(WEBAPP_BUNDLE)/app.yaml"

# App Engine reads its environment from env.yaml beside app.yaml (see webapp/app.yaml).
# API_URL: the base URL of the one `api` Cloud Function (every route of gemcast.routes);
# IDENTITY_API_KEY: the project's web API key (gcp/deploy.sh's webapp step passes both).
webapp-appengine-env: webapp-bundle
	@test -n "$(API_URL)" || { echo "set API_URL=https://... (the gemcast API base URL)"; exit 1; }
	@test -n "$(IDENTITY_API_KEY)" || { echo "set IDENTITY_API_KEY=... (Identity Platform web API key)"; exit 1; }
	printf 'env_variables:\n  API_URL: "%s"\n  AUTH_PROVIDER: "identity_platform"\n  IDENTITY_API_KEY: "%s"\n  TRUST_PROXY: "true"\n  GEMCAST_STAGE: "%s"\n' \
	  "$(API_URL)" "$(IDENTITY_API_KEY)" "$(WEBAPP_STAGE)" > $(WEBAPP_BUNDLE)/env.yaml

# The page against an API already running (e.g. the one `make demo` prints), for development.
webapp-run: $(STAMP)
	cd webapp && API_URL=$(API_URL) USER_POOL_ID=$(USER_POOL_ID) USER_POOL_CLIENT_ID=$(USER_POOL_CLIENT_ID) \
	  TRUST_PROXY=false $(CURDIR)/$(BIN)/gunicorn --bind 127.0.0.1:$(WEBAPP_PORT) --workers 1 --threads 4 \
	  --reload application:application

# Debian's Chromium for the browser tests (never `playwright install`): the Makefile's `browser`.
webapp-browser: browser

webapp-test: $(STAMP) webapp-browser
	$(BIN)/python -m pytest tests/unit/test_webapp.py tests/e2e/test_webapp_browser.py

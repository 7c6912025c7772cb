# The Firebase Auth emulator (npm firebase-tools), the local stand-in of Identity Platform for
# the GCP half: installed into .tools/ (git-ignored) by npm, pinned, for `make test`, `make
# demo-gcp` and `make test-gcp`. Needs Node.js 20+ and npm; no Java, no download of its own.
FIREBASE_TOOLS_VERSION := 15.34.2
FIREBASE_CLI          := .tools/node_modules/firebase-tools/lib/bin/firebase.js
FIREBASE_STAMP        := .tools/.firebase-tools-$(FIREBASE_TOOLS_VERSION)

.PHONY: firebase-tools

firebase-tools: $(FIREBASE_STAMP)

$(FIREBASE_STAMP):
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ (the Firebase Auth emulator runs on it)"; exit 1; }
	mkdir -p .tools
	npm install --prefix .tools --no-audit --no-fund --no-save --loglevel=error firebase-tools@$(FIREBASE_TOOLS_VERSION)
	test -f $(FIREBASE_CLI)
	touch $@

# The targets that start the emulator install it first.
test test-fast demo-gcp test-gcp: $(FIREBASE_STAMP)

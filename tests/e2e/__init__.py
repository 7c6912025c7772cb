"""End-to-end tests: the local stack as a user meets it, over HTTP and in a browser."""

"""Fuzzing and fault drills: schemathesis on the API's OpenAPI document; the prediction log
with moto paused or gone."""

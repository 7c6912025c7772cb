"""The local stack: the stand-in servers (servers), the one Lambda runtime (runtime), the one
provisioning of the template's resources (provision), the API gateway (gateway), the AWS and
GCP stacks (stack, gcp_stack) and the ``gemcast-local`` command (cli). Nothing in gemcast
imports it; the layer and the image do not contain it."""

"""Template checks: cfn-lint, sam validate/build, checkov, IAM least privilege, contracts."""

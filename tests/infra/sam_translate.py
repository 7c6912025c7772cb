"""Print template.yaml as CloudFormation JSON after the SAM transform (run by .venv-sam's Python).

Code locations are replaced by placeholder S3 URIs, as `sam validate` does, so nothing is built
and nothing talks to AWS.
"""

import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class _NoManagedPolicies:
    def load(self) -> dict[str, str]:
        return {}


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        template = yaml_parse(handle.read())
    for resource in template["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = "s3://placeholder/code.zip"
    json.dump(transform(template, {}, _NoManagedPolicies()), sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1])

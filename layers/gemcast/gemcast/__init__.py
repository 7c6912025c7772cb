"""gemcast: diamond pricing on AWS, GCP and one laptop.

The package keeps heavy imports (scikit-learn) inside the modules that need them:
``gemcast.training`` alone imports scikit-learn; everything a Lambda function needs
(schema, cleaning, storage, registry, the numpy predictor) imports only the standard
library, numpy and boto3.
"""

__version__ = "0.1.0"

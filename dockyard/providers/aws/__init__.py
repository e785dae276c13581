"""EC2 hosts through boto3: per environment one key pair, one security group, and one instance per host.

AWS settings come from the standard configuration (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ~/.aws/config
and credentials), each overridable per environment with `aws.profile`, `aws.region` and `aws.endpoint_url`.
Everything dockyard makes is tagged `managed-by=dockyard` and `dockyard:env=<env>` and found again by those
tags, so a rerun changes nothing and teardown works even when half of it is already gone.

- `model.py`: what is wanted and what to change (instance plans, security group rules and their diff); pure.
- `ec2.py`: the EC2 and SSM calls, in and out of the model's types.
- `errors.py`: what AWS refuses, as one line with its fix.
- `provider.py`: `Aws`, the Provider, which carries out the plans and reports each step.

This package imports nothing: boto3 loads with `ec2.py`, when the provider is used.
"""

"""Where hosts come from: one module per `provider:` value, each with provision, hosts and teardown."""

"""Client sessions: the gateway, namespaces (the products' contract), validation."""

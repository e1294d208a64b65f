"""The wire between the control plane and containers: messages, framing, payloads."""

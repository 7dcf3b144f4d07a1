"""The camera side of the protocol: the agent, its command intake and its recorder."""

"""Chat models: the protocol, the Ollama and Anthropic clients, the local-first router."""

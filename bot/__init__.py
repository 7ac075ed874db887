"""The core of Axi: lifecycle, configuration, CLI, conversation pipeline, persona, policies."""

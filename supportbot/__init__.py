"""supportbot: shared code for the gateway and the nlp, dialogue and llm services."""

__version__ = "0.1.0"

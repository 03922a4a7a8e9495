"""Generation providers behind one interface; failover between them lives in `services.llm.service`."""

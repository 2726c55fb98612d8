"""LLM backends behind one interface (base.ChatBackend): transformers, vLLM, an OpenAI-compatible server;
backends.py picks one from the `llm` params, table.py runs one over a table in resumable shards."""

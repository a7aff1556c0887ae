"""SoundMindServing: a model behind vLLM's OpenAI-compatible server, autoscaled on vLLM's load."""

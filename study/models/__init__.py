"""Models: the registry every `--model` resolves through (built-ins, torchvision:, timm:, FILE.py:FUNC),
the built-in builders, what the preflight reads of a model (ModelFacts), the attention network."""

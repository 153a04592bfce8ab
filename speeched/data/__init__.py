"""Audio data: sources (manifests, audiofolder, datasets), decoding, checks, batching, synthesis."""

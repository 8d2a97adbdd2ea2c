"""Audio and text encoders (wav2vec2, Whisper) in Flax NNX, checkpoint conversion, features, TTS."""

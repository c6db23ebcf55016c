"""Constants that every stage must agree on."""

#: Hz. Every prepared clip's audio, every encoder input and every ``infer`` input is resampled to this rate
#: (the rate of wav2vec2 / WavLM, which all the reference methods use).
SAMPLE_RATE = 16000

"""The convolution engine: one dispatcher over native, FFT and compiled implementations."""

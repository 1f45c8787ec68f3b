"""keras-slam: SLAM / mSLAM speech-text pre-training for Keras 3."""

__version__ = "0.1.0"

"""saferdemo: see and train safety-aware reasoning in vision-language models.

The core library shared by the app (`app.py`) and the training pipeline (`training/`).
It imports neither of them.
"""

__version__ = "0.1.0"
